"""The audit HTTP API on the tailer's aiohttp app: the route table, authorization and the failure policy.

    GET {PREFIX}/events                         ?namespace&user&verb&resource&name&since&until&level&code
    GET {PREFIX}/namespaces/{ns}/events           &limit&continue  |  &watch=true&resourceVersion
    GET {PREFIX}/namespaces/{ns}/{resource}/{name}/versions|spechistory|diff|bisect   ?limit (newest changes)
    GET {PREFIX}/{resource}/{name}/versions|...   cluster-scoped objects

``resource`` is the plural, optionally ``plural.group`` (kubectl style, e.g. ``databases.example.com``);
a bare plural matches any group and is refused (409) when two groups have such an object.

The API is a stage of its own: store reads on the store's reader thread, object views in the query
process pool (queries.py), watch streams in watch.py. Its failure policy: whatever goes wrong in a
request (a bad parameter, the store down, a bug) answers that request with a Status and a log line and
a counter; nothing here can hold up or fail ingest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from kube_audit.contract import API_GROUP, API_VERSION, PREFIX
from kube_audit.runtime.observability import get_logger
from tailer.api.authz import CLUSTER, Anyone, Authorizer, Identity
from tailer.api.errors import ApiError, decode_continue, encode_continue, parse_time, status, uint
from tailer.api.queries import MAX_LIMIT, VERSIONS_LIMIT, QueryPool
from tailer.api.watch import Watches, WatchHub, with_rv
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter, Store, StoreError

__all__ = ["PREFIX", "AuditApi", "WatchHub"]
log = get_logger(component="api")


def json_response(body: Any, code: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=code, content_type="application/json")


def split_resource(resource: str) -> tuple[str, str | None]:
    """``databases.example.com`` -> (databases, example.com); ``pods`` -> (pods, None = any group)."""
    plural, _, group = resource.partition(".")
    return plural, (group if group else None)


class AuditApi:
    def __init__(self, store: Store, authorizer: Authorizer | None, hub: WatchHub, metrics: TailerMetrics,
                 poll: float = 1.0, write_timeout: float = 10.0, queries: QueryPool | None = None) -> None:
        self.store, self.authorizer, self.hub, self.metrics = store, authorizer, hub, metrics
        self.watches = Watches(store, hub, metrics, poll, write_timeout)
        self.queries = queries or QueryPool(metrics=metrics)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(PREFIX, self._wrap("discovery", self.discovery))
        r.add_get(PREFIX + "/events", self._wrap("events", self.events))
        r.add_get(PREFIX + "/namespaces/{namespace}/events", self._wrap("events", self.events))
        r.add_get(PREFIX + "/namespaces/{namespace}/{resource}/{name}/{view}", self._wrap("object", self.object))
        r.add_get(PREFIX + "/{resource}/{name}/{view}", self._wrap("object", self.object))

    def close(self) -> None:
        self.hub.close()
        self.queries.close()

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

    async def _authorize(self, request: web.Request, namespace: str) -> Identity:
        if self.authorizer is None:
            raise ApiError(503, "ServiceUnavailable", "the audit API is disabled: start the tailer with "
                           "--token-file, --api-auth kubernetes or --api-auth none")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if isinstance(self.authorizer, Anyone):
            who: Identity | None = Identity("anonymous")
        elif scheme.lower() == "bearer" and token.strip():
            who = await self.authorizer.authenticate(token.strip())
        else:
            who = None
        if who is None:
            raise ApiError(401, "Unauthorized", "a valid bearer token is required")
        if not await self.authorizer.allowed(who, namespace):
            where = f'in the namespace "{namespace}"' if namespace != CLUSTER else "at the cluster scope"
            raise ApiError(403, "Forbidden", f'user "{who.user}" cannot get auditevents.{API_GROUP} {where}')
        return who

    async def discovery(self, request: web.Request) -> web.Response:
        return json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION,
                              "resources": [{"name": "events", "namespaced": True, "kind": "Event",
                                             "verbs": ["get", "list", "watch"]}]})

    # ---- events ----

    def _filter(self, request: web.Request) -> EventFilter:
        q = request.query
        namespace = request.match_info.get("namespace", q.get("namespace"))
        resource, group = split_resource(q["resource"]) if q.get("resource") else (None, None)
        now = time.time()
        code = q.get("code")
        return EventFilter(
            namespace=namespace, user=q.get("user"), verb=q.get("verb"), resource=resource, group=group,
            name=q.get("name"), level=q.get("level"), code=uint(code, "code") if code else None,
            since=parse_time(q["since"], now) if q.get("since") else None,
            until=parse_time(q["until"], now) if q.get("until") else None,
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        flt = self._filter(request)
        await self._authorize(request, flt.namespace or CLUSTER)
        q = request.query
        if q.get("watch", "").lower() in ("true", "1"):
            rv = q.get("resourceVersion")
            return await self.watches.serve(request, flt, uint(rv, "resourceVersion") if rv else None)
        limit = max(1, min(uint(q.get("limit") or "500", "limit"), MAX_LIMIT))
        after = decode_continue(q["continue"]) if q.get("continue") else 0
        head = await self.store.head()
        rows = await self.store.events(flt, after, limit)
        meta: dict[str, Any] = {"resourceVersion": str(max([head, *(s for s, _ in rows)]))}
        if len(rows) == limit:
            meta["continue"] = encode_continue(rows[-1][0])
        return json_response({"kind": "AuditEventList", "apiVersion": API_VERSION, "metadata": meta,
                              "items": [with_rv(seq, ev) for seq, ev in rows]})

    # ---- provenance ----

    async def object(self, request: web.Request) -> web.Response:
        m = request.match_info
        namespace = m.get("namespace", CLUSTER)
        plural, group = split_resource(m["resource"])
        await self._authorize(request, namespace)
        limit = min(uint(request.query.get("limit") or str(VERSIONS_LIMIT), "limit", minimum=1), MAX_LIMIT)
        # A Lease-like object may have 100,000 changes: rebuild only the newest ``limit``, say how many
        # older ones were left out, and number versions as if all were there.
        rows, omitted = await self.store.object_history(group, plural, namespace, m["name"], limit)
        where = f"{namespace}/{m['name']}" if namespace else m["name"]
        if not rows:
            raise ApiError(404, "NotFound", f"no successful changes recorded for {m['resource']} {where}")
        groups = sorted({g for _, g, _ in rows})
        if len(groups) > 1:
            raise ApiError(409, "Conflict", f"{plural} {where} exists in groups {', '.join(groups) or '(core)'}; "
                           f"name it as {plural}.<group>")
        ref = {"group": groups[0], "resource": plural, "namespace": namespace, "name": m["name"]}
        code, body = await self.queries.object_view(rows, omitted, ref, m["view"], dict(request.query), limit)
        return web.Response(body=body, status=code, content_type="application/json")
