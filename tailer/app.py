"""Wires the tailer: sinks, pipeline, forward server, HTTP server; stops them in order."""

from __future__ import annotations

import asyncio

from daemon.http import HttpServer, build_app
from daemon.lifecycle import wait_stop_or_death
from daemon.observability import get_logger

from .configmaps import connect_writer
from .metrics import TailerMetrics
from .pipeline import Observer, Pipeline, Sink
from .server import ForwardServer
from .settings import Settings
from .sinks import StdoutSink

log = get_logger(component="tailer")


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    metrics = TailerMetrics()
    sinks: list[Sink] = []
    if settings.stdout:
        sinks.append(StdoutSink(metrics))
    observers: list[Observer] = []
    configmaps = await connect_writer(settings.configmaps, metrics)
    if configmaps is not None:
        observers.append(configmaps)
    pipeline = Pipeline(sinks, metrics, observers)
    forward = ForwardServer(settings.forward, pipeline, metrics)
    ready = False
    http = HttpServer(build_app(metrics.registry, ready=lambda: ready), settings.http.host, settings.http.port)
    await http.start()
    await forward.start()
    tasks = [asyncio.create_task(configmaps.run(), name="configmap-writer")] if configmaps else []
    ready = True
    log.info("tailer_started", forward_port=forward.port, http_port=http.port)
    await wait_stop_or_death(stop, tasks)
    ready = False
    log.info("tailer_stopping")
    await forward.stop(settings.shutdown_timeout)
    if configmaps is not None:
        await configmaps.stop(settings.shutdown_timeout)
    await http.stop()
    log.info("tailer_stopped")
    return 0
