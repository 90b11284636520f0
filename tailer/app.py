"""Wires the tailer's stages on the shared runtime and registers their stops, in order, on one deadline."""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from asyncio import sslproto
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import Deadline, Runtime
from kube_audit.runtime.observability import get_logger
from tailer.apiproc import ApiProcess, ChildLink, failed
from tailer.configmaps.stage import ConfigMapStage
from tailer.errors import StoreUnavailable
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Observer, Pipeline, Sink
from tailer.ingest.rejected import RejectedFile
from tailer.ingest.stdout import StdoutSink
from tailer.metrics import Families, TailerMetrics, is_api_family
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
    store, store_sink = await open_store(settings, metrics, sinks, rt)
    apis: list[Any] = []
    api_proc: ApiProcess | None = None
    if store_sink is not None:
        if settings.api.tls is not None and settings.api.process:
            api_proc = ApiProcess(api_process_main, settings, metrics)
            store_sink.on_commit = api_proc.wake
        else:
            apis.append(await build_api(settings, store, metrics, rt))
            store_sink.on_commit = apis[0].hub.notify
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
    ready = lambda: state["ready"] and (store is None or store.healthy)  # noqa: E731
    if api_proc is None:
        web_app = build_app(metrics.registry, ready=ready)
    else:  # the API's families come from its process, asked on each scrape
        web_app = build_app(Families(metrics.registry, lambda name: not is_api_family(name)), ready=ready,  # type: ignore[arg-type]
                            extra=api_proc.metrics_text)
    http = HttpServer(web_app, settings.http.host, settings.http.port)
    api_http = api_server(settings, apis, web_app)
    await http.start()
    rt.on_shutdown("http", http.stop)  # the last stage to stop: /healthz and /metrics answer meanwhile
    if api_http is not None:
        await api_http.start()
        rt.on_shutdown("api-http", api_http.stop)
    if api_proc is not None:
        await api_proc.start()  # its start-up error (a bad certificate) is the tailer's
        rt.spawn(api_proc.supervise(), "api-process")
        rt.on_shutdown("api-process", api_proc.stop)

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
             api_port=api_http.port if api_http is not None else api_proc.port if api_proc is not None else http.port,
             api_process=api_proc is not None)


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
                     rt: Runtime) -> tuple[Any, StoreSink | None]:
    """The store as a gating sink and its retention task (none with --store none)."""
    if settings.store.target is None:
        return None, None
    from tailer.store import Store

    try:
        store = await Store.open(settings.store.target)
    except Exception as exc:  # the owning module's errors and OS errors alike: say which store
        where = settings.store.target.split("@")[-1]  # no password in the log
        raise StoreUnavailable(f"cannot open the audit store {where}: {exc}") from exc
    rt.on_exit("store", store.close)
    if settings.integrity_key is not None:  # before retention runs: what it deletes is recorded (tailer/chain)
        await store.chain_start(settings.integrity_key)
    sink = StoreSink(store, metrics)
    sinks.append(sink)
    rt.spawn(retention_loop(store, settings.store, metrics), "store-retention")
    rt.spawn(health_loop(store, metrics), "store-health")
    log.info("store_opened", store=store.kind, api_auth=settings.api.auth)
    return store, sink


async def build_api(settings: Settings, store: Any, metrics: TailerMetrics, rt: Runtime) -> Any:
    """The API's routes over the store (in the tailer's process, or in the API's own: api_process_main)."""
    from tailer.api.authn import FrontProxy
    from tailer.api.authz import build
    from tailer.api.queries import QueryPool
    from tailer.api.routes import AuditApi, WatchHub

    authorizer = build(settings.api.auth, settings.api.token_file, settings.configmaps.kubeconfig,
                       on_error=lambda reason: metrics.api_token_file_errors.labels(reason).inc())

    async def close_reviews() -> None:
        close = getattr(getattr(authorizer, "reviews", None), "close", None)  # --api-auth kubernetes
        if close is not None:
            await close()

    rt.on_exit("api-reviews", close_reviews)
    queries = QueryPool(settings.api.query_workers, timeout=settings.api.query_timeout, metrics=metrics)
    a = settings.api
    proxy = FrontProxy(a.allowed_names, a.username_headers, a.group_headers, a.extra_prefixes) if a.client_ca else None
    api = AuditApi(store, authorizer, WatchHub(), metrics, a.watch_poll, a.watch_write_timeout, queries, proxy,
                   a.watch_recheck, {"max_watchers": a.watch_max, "ring_events": a.watch_ring_events,
                                     "ring_bytes": a.watch_ring_bytes})
    if a.requestheader_from_cluster and proxy is not None:
        rt.spawn(await follow_requestheader(settings, api, proxy), "api-requestheader")
    return api


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


TLS_READ_BUFFER = 32 * 1024  # bytes an API connection reads at once (asyncio's default: 256 KiB)


def api_process_main(settings: Settings, port: int, wake: Connection, control: Connection) -> None:
    """The API's own process (``--api-process``, tailer/apiproc.py): the store as a reader, the API and a
    view of the sources on its own event loop; ingest, retention and the sources' saves stay in the
    tailer's process. ``port``: the one the first child listened on (a restarted child takes it again)."""
    from kube_audit.runtime import lifecycle
    from kube_audit.runtime.observability import setup_logging

    os.dup2(2, 1)  # stdout is the audit event stream: nothing of this process goes there
    setup_logging(settings.log_level)
    # Every TLS connection of asyncio (3.11) gets a 256 KiB receive buffer, zeroed, so resident at once:
    # 200 watches held 51 MB of buffers for requests of a few hundred bytes (CPython issue 109534). 32 KiB
    # still takes two full TLS records per read; what is sent is not buffered here.
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, port=port))

    async def begin(rt: Runtime) -> None:
        try:
            await start_api_process(settings, rt, wake, control)
        except BaseException as exc:
            failed(control, exc)
            raise
        tune_interpreter()

    try:
        code = lifecycle.run(begin, settings.shutdown_timeout)
    except Exception as exc:  # told to the parent already (failed)
        log.error("api_process_failed", error=str(exc), error_type=type(exc).__name__)
        code = 1
    sys.exit(code)


async def start_api_process(settings: Settings, rt: Runtime, wake: Connection, control: Connection) -> None:
    from tailer.sources.stage import Sources
    from tailer.sources.state import Rules
    from tailer.store import Store

    assert settings.store.target is not None
    metrics = TailerMetrics()  # its tailer_api_* families reach the tailer's /metrics (ChildLink)
    store = await Store.open(settings.store.target)  # the tailer opened it first: the schema is current
    rt.on_exit("store", store.close)
    api = await build_api(settings, store, metrics, rt)
    s = settings.sources
    view = Sources(store, metrics, Rules(s.silent_after, s.lagging_bytes, s.gap_window), s.check_interval)
    await view.refresh(log_changes=False)  # what the tailer's sources stage saved; it logs the changes
    api.sources, api.chain_key = view, settings.integrity_key
    rt.spawn(view.run(view_only=True), "sources-view")
    server = api_server(settings, [api], web.Application())
    assert server is not None  # this process exists only for an API with its own port
    await server.start()
    rt.on_shutdown("api-http", server.stop)

    async def close_api(_: Deadline) -> None:
        api.close()

    rt.on_shutdown("api", close_api)

    async def end_watches(_: Deadline) -> None:
        api.hub.close()  # open watches end now (clients resume): none holds the shutdown

    rt.on_shutdown("watches", end_watches)
    ChildLink(wake, control, metrics, on_wake=api.hub.notify, on_parent_gone=rt.stop.set).ready(server.port)
    log.info("api_process_serving", port=server.port, pid=os.getpid())

