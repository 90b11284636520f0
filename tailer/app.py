"""Wires the tailer: sinks, pipeline, forward server, HTTP server; stops them in order."""

from __future__ import annotations

import asyncio
from typing import Any

from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import wait_stop_or_death
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.writer import connect_writer
from tailer.errors import StoreUnavailable
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Observer, Pipeline, Sink
from tailer.ingest.rejected import RejectedFile
from tailer.ingest.stdout import StdoutSink
from tailer.metrics import TailerMetrics
from tailer.settings import Settings
from tailer.store.sink import StoreSink, retention_loop

log = get_logger(component="tailer")


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    metrics = TailerMetrics()
    sinks: list[Sink] = []
    store, api_routes, store_tasks = await open_store(settings, metrics, sinks)
    if settings.stdout:
        # After the store, on purpose. A failed store commit is common (PostgreSQL restarts, a full
        # disk) and means no ack, so the forwarder resends the chunk: written to stdout first, those
        # lines would repeat on every failed attempt. Committed first, a repeat on stdout happens only
        # when stdout itself failed after the commit, and the store drops the resend by (auditID, stage).
        # The ack still waits for both (Pipeline.deliver).
        sinks.append(StdoutSink(metrics, redact=settings.stdout_redact))
    observers: list[Observer] = []
    configmaps = await connect_writer(settings.configmaps, metrics)
    if configmaps is not None:
        observers.append(configmaps)
    rejected = (RejectedFile(settings.rejected_file, metrics, settings.rejected_file_max_bytes)
                if settings.rejected_file else None)
    pipeline = Pipeline(sinks, metrics, observers, rejected)
    forward = ForwardServer(settings.forward, pipeline, metrics)
    ready = False
    web_app = build_app(metrics.registry, ready=lambda: ready)
    for add_routes in api_routes:
        add_routes(web_app)
    http = HttpServer(web_app, settings.http.host, settings.http.port)
    await http.start()
    await forward.start()
    tasks = [asyncio.create_task(configmaps.run(), name="configmap-writer")] if configmaps else []
    ready = True
    log.info("tailer_started", forward_port=forward.port, http_port=http.port)
    await wait_stop_or_death(stop, tasks + store_tasks)
    ready = False
    log.info("tailer_stopping")
    await forward.stop(settings.shutdown_timeout)
    if configmaps is not None:
        await configmaps.stop(settings.shutdown_timeout)
    await http.stop()
    for task in store_tasks:
        task.cancel()
    if store is not None:
        await store.close()
    log.info("tailer_stopped")
    return 0


async def open_store(settings: Settings, metrics: TailerMetrics, sinks: list[Sink]) -> tuple[Any, list[Any], list[Any]]:
    """The store as a gating sink, its retention task and the API routes over it (none with --store none)."""
    if settings.store.target is None:
        return None, [], []
    from tailer.api.authz import build
    from tailer.api.routes import AuditApi, WatchHub
    from tailer.store import Store

    authorizer = build(settings.api.auth, settings.api.token_file, settings.configmaps.kubeconfig)
    try:
        store = await Store.open(settings.store.target)
    except Exception as exc:  # the owning module's errors and OS errors alike: say which store
        where = settings.store.target.split("@")[-1]  # no password in the log
        raise StoreUnavailable(f"cannot open the audit store {where}: {exc}") from exc
    hub = WatchHub()
    sinks.append(StoreSink(store, metrics, on_commit=hub.notify))
    api = AuditApi(store, authorizer, hub, metrics, settings.api.watch_poll, settings.api.watch_write_timeout)
    task = asyncio.create_task(retention_loop(store, settings.store, metrics), name="store-retention")
    log.info("store_opened", store=store.kind, api_auth=settings.api.auth)
    return store, [api.add_routes], [task]
