"""Wires the tailer's stages on the shared runtime and registers their stops, in order, on one deadline."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import Deadline, Runtime
from kube_audit.runtime.observability import get_logger
from tailer.configmaps.stage import ConfigMapStage
from tailer.errors import StoreUnavailable
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Observer, Pipeline, Sink
from tailer.ingest.rejected import RejectedFile
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
        sinks.append(StdoutSink(metrics, executor=rt.executor("stdout", 1), redact=settings.stdout_redact))
    configmaps = await ConfigMapStage.open(settings.configmaps, metrics, store)
    observers: list[Observer] = []
    if configmaps is not None:
        if configmaps.observer is not None:
            observers.append(configmaps.observer)
        if store_sink is not None:
            store_sink.on_commit = _both(store_sink.on_commit, configmaps.notify)
    rejected = (RejectedFile(settings.rejected_file, metrics, settings.rejected_file_max_bytes)
                if settings.rejected_file else None)
    sources = await open_sources(settings, store, metrics, apis, rt) if store is not None else None
    if sources is not None:
        sinks.append(sources.seen)  # last: notes the chunks every other sink took
    chain = await open_chain(settings, metrics, store, apis, rt)
    if chain is not None and sources is not None:
        chain.on_break = sources.report_gaps  # a break of a source's chain is a gap of that source ...
        chain.on_resolve = sources.resolve_gaps  # ... until a late chunk fills it
    pipeline = Pipeline(sinks, metrics, observers, rejected, control=sources, chain=chain)
    forward = ForwardServer(settings.forward, pipeline, metrics)
    # not ready while the store refuses writes (a full disk, PostgreSQL down): every chunk would be refused
    web_app = build_app(metrics.registry, ready=lambda: state["ready"] and (store is None or store.healthy))
    http = HttpServer(web_app, settings.http.host, settings.http.port)
    api_http = api_server(settings, apis, web_app)
    await http.start()
    rt.on_shutdown("http", http.stop)  # the last stage to stop: /healthz and /metrics answer meanwhile
    if api_http is not None:
        await api_http.start()
        rt.on_shutdown("api-http", api_http.stop)

    async def close_apis(_: Deadline) -> None:
        for api in apis:
            api.close()  # query workers stop, a long replay included

    rt.on_shutdown("api", close_apis)
    if configmaps is not None:
        configmaps.start(rt)
        rt.on_shutdown("configmaps", configmaps.stop)  # after the forward server: it writes what came in
    await forward.start()
    rt.on_shutdown("forward", lambda d: forward.stop(d.left()))

    async def not_ready(_: Deadline) -> None:
        state["ready"] = False
        log.info("tailer_stopping")
        for api in apis:
            api.hub.close()  # open watches end now (clients resume): none holds the shutdown

    rt.on_shutdown("readiness", not_ready)
    state["ready"] = True
    log.info("tailer_started", forward_port=forward.port, http_port=http.port,
             api_port=api_http.port if api_http is not None else http.port)


# Every record decoded is a tree of dicts and lists that lives until its chunk is acked, so with
# CPython's default thresholds (700, 10, 10) the collector ran every few hundred records and kept
# re-scanning the chunks in flight and everything loaded at start-up: a quarter to a third of the CPU per
# event (bench/fluentbit.py). Records are freed by reference counting; cycles are rare and still collected.
GC_THRESHOLDS = (100_000, 20, 100)


def tune_gc() -> None:
    """Once the daemon has started: what start-up built is kept out of every later collection (frozen),
    and the young generation is collected every GC_THRESHOLDS[0] allocations instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


SWITCH_INTERVAL = 0.0005  # seconds a thread waits for the GIL before it asks the holder to let go (CPython: 5 ms)


def tune_interpreter() -> None:
    """Keep the interpreter's own pauses off the ack path and the API (the daemon's, once started:
    cli.main; not for a process that runs tailers in turn, as tests do).

    GC: what exists once the stages have started (modules, the kubernetes client, settings, stages)
    lives as long as the process: frozen, a full collection no longer walks it. Ingest allocates tens of
    thousands of containers per chunk that live until the chunk is committed: with the default
    thresholds they were promoted and set off a full collection about every second, each holding the
    event loop for 75-300 ms under load (bench/api_latency.py's probe). Rarer young collections let them
    die first.

    GIL: the store's threads let go of the GIL around every SQLite step (each row read or written) and
    must take it back from the event loop, which holds it while it decodes and parses; each time they
    waited up to the 5 ms switch interval (a page of 100 rows: hundreds of ms). 0.5 ms measured a
    lower p95 for a reader beside a busy loop, at no cost to the loop's own progress."""
    tune_gc()
    sys.setswitchinterval(SWITCH_INTERVAL)


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

    async def close_store() -> None:
        await store.close()
        close = getattr(getattr(authorizer, "reviews", None), "close", None)  # --api-auth kubernetes
        if close is not None:
            await close()

    rt.on_exit("store", close_store)
    if settings.integrity_key is not None:  # before retention runs: what it deletes is recorded (tailer/chain)
        await store.chain_start(settings.integrity_key)
    hub = WatchHub()
    sink = StoreSink(store, metrics, on_commit=hub.notify)
    sinks.append(sink)
    queries = QueryPool(settings.api.query_workers, timeout=settings.api.query_timeout, metrics=metrics)
    a = settings.api
    proxy = FrontProxy(a.allowed_names, a.username_headers, a.group_headers, a.extra_prefixes) if a.client_ca else None
    api = AuditApi(store, authorizer, hub, metrics, a.watch_poll, a.watch_write_timeout, queries, proxy,
                   a.watch_recheck, {"max_watchers": a.watch_max, "ring_events": a.watch_ring_events,
                                     "ring_bytes": a.watch_ring_bytes})
    rt.spawn(retention_loop(store, settings.store, metrics), "store-retention")
    rt.spawn(health_loop(store, metrics), "store-health")
    if a.requestheader_from_cluster and proxy is not None:
        rt.spawn(await follow_requestheader(settings, api, proxy), "api-requestheader")
    log.info("store_opened", store=store.kind, api_auth=settings.api.auth)
    return store, [api], sink


async def open_sources(settings: Settings, store: Any, metrics: TailerMetrics, apis: list[Any],
                       rt: Runtime) -> Any:
    """The sources stage over the store: the control sink, its loop, and /sources on the API."""
    from tailer.sources.stage import Sources
    from tailer.sources.state import Rules

    s = settings.sources
    stage = Sources(store, metrics, Rules(s.silent_after, s.lagging_bytes, s.gap_window), s.check_interval,
                    keep_gaps=settings.store.retention_age)  # a gap goes with the events of its time
    await stage.start()
    for api in apis:
        api.sources = stage
    rt.spawn(stage.run(), "sources")
    rt.on_shutdown("sources", stage.stop)  # after the forward server (registered later, stopped first)
    return stage
async def open_chain(settings: Settings, metrics: TailerMetrics, store: Any, apis: list[Any], rt: Runtime) -> Any:
    """The chunk chain (tamper evidence) over the store, with its key: none without a store or a key."""
    if store is None or settings.integrity_key is None:
        return None
    from tailer.chain.stage import ChainStage

    chain = ChainStage(settings.integrity_key, metrics, store, settings.chain_grace)  # store.chain_start ran
    rt.spawn(chain.gap_loop(), "chain-gaps")
    for api in apis:
        api.chain_key = settings.integrity_key  # verify checks the seals with it
    return chain


async def follow_requestheader(settings: Settings, api: Any, base: Any) -> Coroutine[Any, Any, None]:
    """--requestheader-from-cluster: the front proxy's CA and headers now, then a loop that refreshes them."""
    from tailer.api.requestheader import ClusterRequestHeader

    assert settings.api.client_ca is not None
    os.makedirs(os.path.dirname(settings.api.client_ca) or ".", exist_ok=True)
    loader = ClusterRequestHeader(settings.configmaps.kubeconfig, settings.api.client_ca, base)
    api.authn.front_proxy = await loader.load()  # a cluster without an aggregation layer: fail at start-up
    api.on_close.append(loader.close)

    def apply(proxy: Any) -> None:
        api.authn.front_proxy = proxy

    return loader.follow(apply)


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
