"""The audit HTTP API: the route table, authentication and authorization, and the failure policy.

    GET /apis, /apis/{group}, {PREFIX}, /openapi/v2, /openapi/v3[/apis/{group}/{version}]   discovery
    GET {PREFIX}/[namespaces/{ns}/]auditevents   list (Table or AuditEventList) | ?watch=true   (resource.py)
    GET {PREFIX}/[namespaces/{ns}/]events        the same, as the first API had it (the plugin's path)
    GET {PREFIX}/[namespaces/{ns}/]{resource}/{name}/versions|spechistory|diff|bisect   (queries.py)
    GET {PREFIX}/verify?source&cluster&since   the chunk chain and stored events re-checked (verify.py)

``resource`` is the plural, optionally ``plural.group`` (kubectl style, e.g. ``databases.example.com``);
a bare plural matches any group and is refused (409) when two groups have such an object. An object view
is one cluster's history: without ``?cluster`` it is refused (409) when the object's events came from
more than one cluster (two clusters' same-named objects are different objects).

The API is a stage of its own: store reads on the store's reader thread, object views in the query
process pool (queries.py), watch streams in watch.py. Its failure policy: whatever goes wrong in a
request (a bad parameter, the store down, a bug) answers that request with a Status and a log line and
a counter; nothing here can hold up or fail ingest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from kube_audit.contract import API_GROUP, API_VERSION, PREFIX
from kube_audit.model.source import SourceId
from kube_audit.runtime.observability import get_logger
from tailer.api import discovery, resource, verify
from tailer.api import sources as sources_api
from tailer.api.authn import Authenticator, FrontProxy
from tailer.api.authz import CLUSTER, RESOURCE, Authorizer, Identity
from tailer.api.errors import ApiError, decode_continue, encode_continue, status, uint
from tailer.api.queries import MAX_LIMIT, VERSIONS_LIMIT, VIEW_ALIASES, QueryPool
from tailer.api.watch import Watches, WatchHub
from tailer.metrics import TailerMetrics
from tailer.store import Store, StoreError
from tailer.store.base import SourcedJson, SourcedRows
from tailer.store.rows import event_time

__all__ = ["PREFIX", "AuditApi", "WatchHub"]
log = get_logger(component="api")
SCAN_BATCH = 1000  # events read per store query when a filter is checked here (several verbs, groups, !=)
MAX_SCAN = 50_000  # events read for one page at most; then a short page with a continue token


def json_response(body: Any, code: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=code, content_type="application/json")


def split_resource(name: str) -> tuple[str, str | None]:
    """``databases.example.com`` -> (databases, example.com); ``pods`` -> (pods, None = any group)."""
    plural, _, group = name.partition(".")
    return plural, (group if group else None)


class AuditApi:
    def __init__(self, store: Store, authorizer: Authorizer | None, hub: WatchHub, metrics: TailerMetrics,
                 poll: float = 1.0, write_timeout: float = 10.0, queries: QueryPool | None = None,
                 front_proxy: FrontProxy | None = None, watch_recheck: float = 60.0,
                 watch_limits: dict[str, int] | None = None) -> None:
        self.store, self.authorizer, self.hub, self.metrics = store, authorizer, hub, metrics
        self.authn = Authenticator(authorizer, front_proxy)
        self.watches = Watches(store, hub, metrics, poll, write_timeout, watch_recheck, **(watch_limits or {}))
        self.queries = queries or QueryPool(metrics=metrics)
        self.on_close: list[Callable[[], None]] = []
        self.sources: Any = None  # the sources stage (tailer/sources/), set by app.py: /sources, gap warnings
        self.chain_key: bytes | None = None  # the chunk chain's key (tailer/app.py open_chain): verify needs it

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        static = {"/apis": discovery.api_group_list(), f"/apis/{API_GROUP}": discovery.api_group(),
                  PREFIX: discovery.api_resource_list(), "/openapi/v2": discovery.openapi_v2(),
                  "/openapi/v3": discovery.openapi_v3_index(), f"/openapi/v3/apis/{API_VERSION}": discovery.openapi_v3_group()}
        for path, body in static.items():
            r.add_get(path, self._wrap("discovery", self._document(orjson.dumps(body))))
        for ns in ("", "/namespaces/{namespace}"):
            r.add_get(PREFIX + ns + "/auditevents", self._wrap("events", self.events))
            r.add_get(PREFIX + ns + "/events", self._wrap("events", self.legacy_events))
        sources_api.add_routes(r, self)
        r.add_get(PREFIX + "/verify", self._wrap("verify", self.verify))
        r.add_get(PREFIX + "/namespaces/{namespace}/{resource}/{name}/{view}", self._wrap("object", self.object))
        r.add_get(PREFIX + "/{resource}/{name}/{view}", self._wrap("object", self.object))

    def close(self) -> None:
        self.hub.close()
        self.watches.ring.stop()
        self.queries.close()
        close = getattr(self.authorizer, "close", None)
        for hook in [*self.on_close, *([close] if close else [])]:
            hook()

    def _document(self, body: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            # Static and without data: served to anyone, as the aggregator's availability checks need
            return web.Response(body=body, content_type="application/json")

        return handler

    def _wrap(self, route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = json_response(status(exc.code, exc.reason, exc.message), exc.code)
            except StoreError as exc:
                log.error("api_store_error", route=route, error=str(exc))
                self.metrics.api_errors.labels(route, "store").inc()
                response = json_response(status(503, "ServiceUnavailable", f"audit store unavailable: {exc}"), 503)
            except Exception as exc:  # a bug in one request must stay in that request
                log.exception("api_request_failed", route=route, path=request.path, error=repr(exc))
                self.metrics.api_errors.labels(route, "internal").inc()
                response = json_response(status(500, "InternalError", f"internal error: {type(exc).__name__}"), 500)
            self.metrics.api_requests.labels(route, str(response.status)).inc()
            return response

        return wrapped

    async def _authorize(self, request: web.Request, namespace: str, verb: str, what: str = RESOURCE) -> Identity:
        who = await self.authn.identify(request)
        if not await self.authn.allowed(who, namespace, verb, what):
            where = f'in the namespace "{namespace}"' if namespace != CLUSTER else "at the cluster scope"
            raise ApiError(403, "Forbidden", f'{what}.{API_GROUP} is forbidden: User "{who.user}" cannot {verb} '
                           f'resource "{what}" in API group "{API_GROUP}" {where}')
        return who

    def _still_allowed(self, request: web.Request, namespace: str, verb: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            try:
                await self._authorize(request, namespace, verb)
            except ApiError:
                return False
            return True

        return check

    # ---- events ----

    async def legacy_events(self, request: web.Request) -> web.StreamResponse:
        return await self.events(request, bookmarks=True)

    async def events(self, request: web.Request, bookmarks: bool = False) -> web.StreamResponse:
        q = request.query
        resource.check_params(q, resource.LIST_PARAMS | resource.FILTER_PARAMS)
        resource.check_query_values(q)
        query = resource.plan(resource.selection(q, q.getall, request.match_info.get("namespace")))
        watch = q.get("watch", "").lower() in ("true", "1")
        scope = query.namespace or CLUSTER
        await self._authorize(request, scope, "watch" if watch else "list")
        version = resource.table_version(request.headers.get("Accept", ""))
        include = resource.include_object(q)
        timeout = uint(q["timeoutSeconds"], "timeoutSeconds") if q.get("timeoutSeconds") else None

        def encode(seq: int, event: resource.Stored, source: SourceId | None = None) -> bytes:
            if version:
                return resource.table_json(version, seq, event, include, source)
            return resource.item_json(seq, event, source)

        if watch:
            rv = q.get("resourceVersion")
            bookmarks = bookmarks or q.get("allowWatchBookmarks", "").lower() == "true"
            return await self.watches.serve(request, query.store, uint(rv, "resourceVersion") if rv else None,
                                            timeout, self._still_allowed(request, scope, "watch"), encode,
                                            query.keep, bookmarks, ("table", version, include) if version else "item")
        limit = max(1, min(uint(q.get("limit") or "500", "limit"), MAX_LIMIT))
        after = decode_continue(q["continue"]) if q.get("continue") else 0
        # both reads at once: one wait for a reader thread behind ingest, not two in turn
        head, (rows, more) = await asyncio.gather(self.store.head(), self._page(query, after, limit))
        meta: dict[str, Any] = {"resourceVersion": str(max([head, *(s for s, _, _ in rows)]))}
        if more is not None:
            meta["continue"] = encode_continue(more)
        if version:
            cells, times = resource.table_rows(rows, include)
            body = resource.table_body(version, cells, meta)
            headers = {"Content-Type": f"application/json;as=Table;v={version};g=meta.k8s.io"}
        else:
            fluent = await self.store.metas(rows[0][0], rows[-1][0]) if rows else {}
            items, times = resource.list_items(rows, fluent)
            body, headers = resource.event_list(items, meta), {"Content-Type": "application/json"}
        # the range shown: the filter's bounds, else the events' own times (for the gap warnings)
        shown = [query.store.since, query.store.until, *(event_time(e) or None for e in times)]
        return sources_api.warn(self, web.Response(body=body, headers=headers), shown)

    async def _page(self, query: resource.Query, after: int, limit: int
                    ) -> tuple[SourcedRows | SourcedJson, int | None]:
        """Up to ``limit`` matching events after ``after``, and where the next page starts (None: no more);
        their JSON unparsed when the store applies the whole filter."""
        if query.keep is None:
            found = await self.store.sourced_json(query.store, after, limit)
            return found, (found[-1][0] if len(found) == limit else None)
        out: SourcedRows = []
        scanned, cursor = 0, after
        while True:
            batch = await self.store.sourced_events(query.store, cursor, SCAN_BATCH)
            for seq, event, source in batch:
                if query.keep(event):
                    out.append((seq, event, source))
                    if len(out) == limit:
                        return out, seq
            if len(batch) < SCAN_BATCH:
                return out, None
            cursor, scanned = batch[-1][0], scanned + len(batch)
            if scanned >= MAX_SCAN:
                return out, cursor

    async def verify(self, request: web.Request) -> web.Response:
        return await verify.serve(self, request)

    # ---- provenance ----

    async def object(self, request: web.Request) -> web.Response:
        m = request.match_info
        namespace = m.get("namespace", CLUSTER)
        plural, group = split_resource(m["resource"])
        resource.check_params(request.query, resource.VIEW_PARAMS)
        await self._authorize(request, namespace, "get")
        view = VIEW_ALIASES.get(m["view"], m["view"])
        limit = min(uint(request.query.get("limit") or str(VERSIONS_LIMIT), "limit", minimum=1), MAX_LIMIT)
        where = f"{namespace}/{m['name']}" if namespace else m["name"]
        cluster, source = request.query.get("cluster"), request.query.get("source")
        if cluster is None:  # one cluster's history, never a merge: find which, or refuse
            clusters = await self.store.object_clusters(group, plural, namespace, m["name"], source)
            if len(clusters) > 1:
                raise ApiError(409, "Conflict", f"{m['resource']} {where} has events from {len(clusters)} "
                               f"clusters: {', '.join(repr(c) for c in clusters)}; pass cluster=<name> "
                               "(kubectl audit --cluster NAME) to see one cluster's history")
            cluster = clusters[0] if clusters else None
        # A Lease-like object may have 100,000 changes: rebuild only the newest ``limit``, say how many
        # older ones were left out, and number versions as if all were there.
        rows, omitted = await self.store.object_history(group, plural, namespace, m["name"], limit, cluster, source)
        if not rows:
            of = f" from cluster {cluster!r}" if request.query.get("cluster") is not None else ""
            raise ApiError(404, "NotFound", f"no successful changes recorded for {m['resource']} {where}{of}")
        groups = sorted({g for _, g, _ in rows})
        if len(groups) > 1:
            raise ApiError(409, "Conflict", f"{plural} {where} exists in groups {', '.join(groups) or '(core)'}; "
                           f"name it as {plural}.<group>")
        ref = {"group": groups[0], "resource": plural, "namespace": namespace, "name": m["name"],
               **({"cluster": cluster} if cluster is not None else {}), **({"source": source} if source else {})}
        code, body = await self.queries.object_view(rows, omitted, ref, view, dict(request.query), limit)
        return sources_api.warn(self, web.Response(body=body, status=code, content_type="application/json"),
                                [event_time(e) or None for _, _, e in rows])
