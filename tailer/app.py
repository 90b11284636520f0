"""Wires the tailer's stages on the shared runtime and registers their stops, in order, on one deadline."""

from __future__ import annotations

from typing import Any

from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import Deadline, Runtime
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.stage import ConfigMapStage
from tailer.errors import StoreUnavailable
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Observer, Pipeline, Sink
from tailer.ingest.stdout import StdoutSink
from tailer.metrics import TailerMetrics
from tailer.settings import Settings
from tailer.store.sink import StoreSink, health_loop, retention_loop

log = get_logger(component="tailer")


async def start(settings: Settings, rt: Runtime) -> None:
    """Open the store, start every stage; ``rt`` stops them in the reverse order (intake first)."""
    async def stopped() -> None:
        log.info("tailer_stopped")

    rt.on_exit("stopped", stopped)  # the last thing the shutdown does
    metrics = TailerMetrics()
    sinks: list[Sink] = []
    state = {"ready": False}
    store, apis, store_sink = await open_store(settings, metrics, sinks, rt)
    if settings.stdout:
        # After the store, on purpose. A failed store commit is common (PostgreSQL restarts, a full
        # disk) and means no ack, so the forwarder resends the chunk: written to stdout first, those
        # lines would repeat on every failed attempt. Committed first, a repeat on stdout happens only
        # when stdout itself failed after the commit, and the store drops the resend by (auditID, stage).
        # The ack still waits for both (Pipeline.deliver).
        sinks.append(StdoutSink(metrics, executor=rt.executor("stdout", 1)))
    configmaps = await ConfigMapStage.open(settings.configmaps, metrics, store)
    observers: list[Observer] = []
    if configmaps is not None:
        if configmaps.observer is not None:
            observers.append(configmaps.observer)
        if store_sink is not None:
            store_sink.on_commit = _both(store_sink.on_commit, configmaps.notify)
    pipeline = Pipeline(sinks, metrics, observers)
    forward = ForwardServer(settings.forward, pipeline, metrics)
    # not ready while the store refuses writes (a full disk, PostgreSQL down): every chunk would be refused
    web_app = build_app(metrics.registry, ready=lambda: state["ready"] and (store is None or store.healthy))
    for api in apis:
        api.add_routes(web_app)
    http = HttpServer(web_app, settings.http.host, settings.http.port)
    await http.start()
    rt.on_shutdown("http", http.stop)  # the last stage to stop: /healthz and /metrics answer meanwhile

    async def close_apis(_: Deadline) -> None:
        for api in apis:
            api.close()  # open watches end now, query workers stop: neither holds the http stop

    rt.on_shutdown("api", close_apis)
    if configmaps is not None:
        configmaps.start(rt)
        rt.on_shutdown("configmaps", configmaps.stop)  # after the forward server: it writes what came in
    await forward.start()
    rt.on_shutdown("forward", lambda d: forward.stop(d.left()))

    async def not_ready(_: Deadline) -> None:
        state["ready"] = False
        log.info("tailer_stopping")

    rt.on_shutdown("readiness", not_ready)
    state["ready"] = True
    log.info("tailer_started", forward_port=forward.port, http_port=http.port)


def _both(first: Any, second: Any) -> Any:
    def call() -> None:
        if first is not None:
            first()
        second()

    return call


async def open_store(settings: Settings, metrics: TailerMetrics, sinks: list[Sink],
                     rt: Runtime) -> tuple[Any, list[Any], StoreSink | None]:
    """The store as a gating sink, its retention task and the API routes over it (none with --store none)."""
    if settings.store.target is None:
        return None, [], None
    from tailer.api.authz import build
    from tailer.api.queries import QueryPool
    from tailer.api.routes import AuditApi, WatchHub
    from tailer.store import Store

    authorizer = build(settings.api.auth, settings.api.token_file, settings.configmaps.kubeconfig)
    try:
        store = await Store.open(settings.store.target)
    except Exception as exc:  # the owning module's errors and OS errors alike: say which store
        where = settings.store.target.split("@")[-1]  # no password in the log
        raise StoreUnavailable(f"cannot open the audit store {where}: {exc}") from exc

    async def close_store() -> None:
        await store.close()
        close = getattr(getattr(authorizer, "reviews", None), "close", None)  # --api-auth kubernetes
        if close is not None:
            await close()

    rt.on_exit("store", close_store)
    hub = WatchHub()
    sink = StoreSink(store, metrics, on_commit=hub.notify)
    sinks.append(sink)
    queries = QueryPool(settings.api.query_workers, timeout=settings.api.query_timeout, metrics=metrics)
    api = AuditApi(store, authorizer, hub, metrics, settings.api.watch_poll, settings.api.watch_write_timeout,
                   queries)
    rt.spawn(retention_loop(store, settings.store, metrics), "store-retention")
    rt.spawn(health_loop(store, metrics), "store-health")
    log.info("store_opened", store=store.kind, api_auth=settings.api.auth)
    return store, [api], sink
