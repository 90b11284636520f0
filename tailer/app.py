"""Wires the tailer: sinks, pipeline, forward server, HTTP server; stops them in order."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import wait_stop_or_death
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.writer import connect_writer
from tailer.errors import StoreUnavailable
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Observer, Pipeline, Sink
from tailer.ingest.stdout import StdoutSink
from tailer.metrics import TailerMetrics
from tailer.settings import Settings
from tailer.store.sink import StoreSink, retention_loop

log = get_logger(component="tailer")


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    metrics = TailerMetrics()
    sinks: list[Sink] = []
    store, apis, store_tasks = await open_store(settings, metrics, sinks)
    if settings.stdout:
        # After the store, on purpose. A failed store commit is common (PostgreSQL restarts, a full
        # disk) and means no ack, so the forwarder resends the chunk: written to stdout first, those
        # lines would repeat on every failed attempt. Committed first, a repeat on stdout happens only
        # when stdout itself failed after the commit, and the store drops the resend by (auditID, stage).
        # The ack still waits for both (Pipeline.deliver).
        sinks.append(StdoutSink(metrics))
    observers: list[Observer] = []
    configmaps = await connect_writer(settings.configmaps, metrics)
    if configmaps is not None:
        observers.append(configmaps)
    pipeline = Pipeline(sinks, metrics, observers)
    forward = ForwardServer(settings.forward, pipeline, metrics)
    ready = False
    web_app = build_app(metrics.registry, ready=lambda: ready)
    http = HttpServer(web_app, settings.http.host, settings.http.port)
    api_http = api_server(settings, apis, web_app)
    await http.start()
    if api_http is not None:
        await api_http.start()
    await forward.start()
    tasks = [asyncio.create_task(configmaps.run(), name="configmap-writer")] if configmaps else []
    ready = True
    log.info("tailer_started", forward_port=forward.port, http_port=http.port,
             api_port=api_http.port if api_http is not None else http.port)
    await wait_stop_or_death(stop, tasks + store_tasks)
    ready = False
    log.info("tailer_stopping")
    for api in apis:
        api.hub.close()  # open watches end now (clients resume): none holds the shutdown
    await forward.stop(settings.shutdown_timeout)
    if configmaps is not None:
        await configmaps.stop(settings.shutdown_timeout)
    for api in apis:
        api.close()  # query workers stop, a long replay included
    if api_http is not None:
        await api_http.stop()
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
    from tailer.api.authn import FrontProxy
    from tailer.api.authz import build
    from tailer.api.queries import QueryPool
    from tailer.api.routes import AuditApi, WatchHub
    from tailer.store import Store

    authorizer = build(settings.api.auth, settings.api.token_file, settings.configmaps.kubeconfig,
                       on_error=lambda reason: metrics.api_token_file_errors.labels(reason).inc())
    try:
        store = await Store.open(settings.store.target)
    except Exception as exc:  # the owning module's errors and OS errors alike: say which store
        where = settings.store.target.split("@")[-1]  # no password in the log
        raise StoreUnavailable(f"cannot open the audit store {where}: {exc}") from exc
    hub = WatchHub()
    sinks.append(StoreSink(store, metrics, on_commit=hub.notify))
    queries = QueryPool(settings.api.query_workers, timeout=settings.api.query_timeout, metrics=metrics)
    a = settings.api
    proxy = FrontProxy(a.allowed_names, a.username_headers, a.group_headers, a.extra_prefixes) if a.client_ca else None
    api = AuditApi(store, authorizer, hub, metrics, a.watch_poll, a.watch_write_timeout, queries, proxy,
                   a.watch_recheck)
    tasks = [asyncio.create_task(retention_loop(store, settings.store, metrics), name="store-retention")]
    if a.requestheader_from_cluster and proxy is not None:
        tasks.append(await follow_requestheader(settings, api, proxy))
    log.info("store_opened", store=store.kind, api_auth=settings.api.auth)
    return store, [api], tasks


async def follow_requestheader(settings: Settings, api: Any, base: Any) -> asyncio.Task[None]:
    """--requestheader-from-cluster: the front proxy's CA and headers now, then a task that refreshes them."""
    import os

    from tailer.api.requestheader import ClusterRequestHeader

    assert settings.api.client_ca is not None
    os.makedirs(os.path.dirname(settings.api.client_ca) or ".", exist_ok=True)
    loader = ClusterRequestHeader(settings.configmaps.kubeconfig, settings.api.client_ca, base)
    api.authn.front_proxy = await loader.load()  # a cluster without an aggregation layer: fail at start-up
    api.on_close.append(loader.close)

    def apply(proxy: Any) -> None:
        api.authn.front_proxy = proxy

    return asyncio.create_task(loader.follow(apply), name="api-requestheader")


def api_server(settings: Settings, apis: list[Any], plain: web.Application) -> HttpServer | None:
    """The API's routes: on their own HTTPS port with --api-tls-cert, else on the health/metrics port."""
    if settings.api.tls is None or not apis:
        for api in apis:
            api.add_routes(plain)
        return None
    from tailer.api.authn import api_tls

    app = web.Application()
    for api in apis:
        api.add_routes(app)
    return HttpServer(app, settings.api.host, settings.api.port, api_tls(settings.api.tls, settings.api.client_ca))
