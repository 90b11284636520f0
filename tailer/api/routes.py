"""The audit HTTP API on the tailer's aiohttp app: event queries, watch streams, object provenance.

    GET {PREFIX}/events                         ?namespace&user&verb&resource&name&since&until&level&code
    GET {PREFIX}/namespaces/{ns}/events           &limit&continue  |  &watch=true&resourceVersion
    GET {PREFIX}/namespaces/{ns}/{resource}/{name}/versions|spechistory|diff|bisect   ?limit (newest changes)
    GET {PREFIX}/{resource}/{name}/versions|...   cluster-scoped objects

``resource`` is the plural, optionally ``plural.group`` (kubectl style, e.g. ``databases.example.com``);
a bare plural matches any group and is refused (409) when two groups have such an object.

Watch: every watcher reads the store by sequence (``seq > last``), a batch at a time, and sleeps until
the store sink says it committed or ``poll`` seconds pass (the timer picks up other replicas' writes to
a shared PostgreSQL). So a watcher holds at most one batch in memory; one that cannot take a batch within
``write_timeout`` is cut off with a final ERROR line saying where to resume.

Like Kubernetes, a watch from a resourceVersion that retention has overtaken (an event above it was
deleted) answers 410 Gone (reason Expired) rather than skipping what is gone; when retention overtakes
a running watcher, its stream ends with an ERROR line carrying the same 410 Status. ``resourceVersion=0``
means "from the oldest event kept".
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from kube_audit.contract import API_GROUP, API_VERSION, PREFIX  # noqa: F401
from kube_audit.model import provenance
from kube_audit.runtime.flags import parse_duration
from kube_audit.runtime.observability import get_logger
from tailer.api.authz import CLUSTER, Anyone, Authorizer, Identity
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter, Store, StoreError

MAX_LIMIT = 5000
VERSIONS_LIMIT = 1000  # default ``limit`` of the object views: versions are rebuilt from the newest events
WATCH_BATCH = 500
BOOKMARK_EVERY = 30.0
log = get_logger(component="api")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def json_response(body: Any, code: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=code, content_type="application/json")


class WatchHub:
    """Wakes watchers after the store committed; each watcher owns one flag, no queue."""

    def __init__(self) -> None:
        self._flags: set[asyncio.Event] = set()

    def notify(self) -> None:
        for flag in self._flags:
            flag.set()

    def register(self) -> asyncio.Event:
        flag = asyncio.Event()
        self._flags.add(flag)
        return flag

    def unregister(self, flag: asyncio.Event) -> None:
        self._flags.discard(flag)

    def __len__(self) -> int:
        return len(self._flags)


def parse_time(value: str, now: float) -> float:
    """RFC 3339 (2026-11-20T09:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)."""
    try:
        return now - parse_duration(value)
    except Exception:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ApiError(400, "BadRequest", f"bad time {value!r}: use RFC 3339 or a duration like 2h") from None


def split_resource(resource: str) -> tuple[str, str | None]:
    """``databases.example.com`` -> (databases, example.com); ``pods`` -> (pods, None = any group)."""
    plural, _, group = resource.partition(".")
    return plural, (group if group else None)


def with_rv(seq: int, event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "metadata": {"resourceVersion": str(seq)}}


def too_old(rv: int, pruned: int) -> str:
    """Kubernetes' words for a watch that cannot resume (so clients that parse them keep working)."""
    return (f"too old resource version: {rv} ({pruned}); events after it were deleted by retention, "
            "list again and watch from the list's resourceVersion")


def encode_continue(after: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def uint(raw: str, what: str) -> int:
    """A non-negative integer that fits the stores' 64-bit columns, else 400."""
    if not raw.isdigit() or int(raw) > 2**63 - 1:
        raise ApiError(400, "BadRequest", f"bad {what} {raw[:40]!r}: expected a whole number")
    return int(raw)


def decode_continue(token: str) -> int:
    try:
        after = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
    except Exception:
        raise ApiError(400, "BadRequest", "bad continue token") from None
    return uint(str(after), "continue token")


class AuditApi:
    def __init__(self, store: Store, authorizer: Authorizer | None, hub: WatchHub, metrics: TailerMetrics,
                 poll: float = 1.0, write_timeout: float = 10.0) -> None:
        self.store, self.authorizer, self.hub, self.metrics = store, authorizer, hub, metrics
        self.poll, self.write_timeout = poll, write_timeout

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(PREFIX, self._wrap("discovery", self.discovery))
        r.add_get(PREFIX + "/events", self._wrap("events", self.events))
        r.add_get(PREFIX + "/namespaces/{namespace}/events", self._wrap("events", self.events))
        r.add_get(PREFIX + "/namespaces/{namespace}/{resource}/{name}/{view}", self._wrap("object", self.object))
        r.add_get(PREFIX + "/{resource}/{name}/{view}", self._wrap("object", self.object))

    def _wrap(self, route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = json_response(status(exc.code, exc.reason, exc.message), exc.code)
            except StoreError as exc:
                log.error("api_store_error", route=route, error=str(exc))
                response = json_response(status(503, "ServiceUnavailable", f"audit store unavailable: {exc}"), 503)
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
        if request.query.get("watch", "").lower() in ("true", "1"):
            return await self.watch(request, flt)
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            raise ApiError(400, "BadRequest", "limit must be a number") from None
        limit = max(1, min(limit, MAX_LIMIT))
        after = decode_continue(request.query["continue"]) if request.query.get("continue") else 0
        head = await self.store.head()
        rows = await self.store.events(flt, after, limit)
        meta: dict[str, Any] = {"resourceVersion": str(max([head, *(s for s, _ in rows)]))}
        if len(rows) == limit:
            meta["continue"] = encode_continue(rows[-1][0])
        return json_response({"kind": "AuditEventList", "apiVersion": API_VERSION, "metadata": meta,
                              "items": [with_rv(seq, ev) for seq, ev in rows]})

    async def watch(self, request: web.Request, flt: EventFilter) -> web.StreamResponse:
        rv = request.query.get("resourceVersion")
        last = uint(rv, "resourceVersion") if rv else await self.store.head()
        pruned = await self.store.pruned()
        if last and last < pruned:
            raise ApiError(410, "Expired", too_old(last, pruned))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        flag = self.hub.register()
        self.metrics.watchers.inc()
        log.info("watch_started", resource_version=last, namespace=flt.namespace)
        try:
            await self._stream(response, flt, last, flag, pruned,
                               gone=lambda: request.transport is None or request.transport.is_closing())
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # the store failed, or a bookmark could not be written: end cleanly
            log.error("watch_failed", resource_version=last, error=str(exc) or type(exc).__name__)
            await self._final(response, status(500, "InternalError", f"watch ended: {exc or type(exc).__name__}; "
                                                                      "resume from the last resourceVersion seen"))
        finally:
            self.hub.unregister(flag)
            self.metrics.watchers.dec()
        return response

    async def _stream(self, response: web.StreamResponse, flt: EventFilter, last: int, flag: asyncio.Event,
                      pruned: int = 0, gone: Callable[[], bool] = lambda: False) -> None:
        """``pruned``: the retention mark the watcher started with (what it accepted as gone)."""
        quiet_since = time.monotonic()
        while not gone():  # aiohttp does not cancel handlers when the client leaves; we look each poll
            flag.clear()
            rows = await self.store.events(flt, last, WATCH_BATCH)
            # Read after the rows: if retention deleted anything above ``last`` since we last looked,
            # these rows may lack it (or it went just after we read: we cannot tell, so we say so too).
            mark = await self.store.pruned()
            if mark > pruned and mark > last:
                await self._final(response, status(410, "Expired", too_old(last, mark)))
                self.metrics.watchers_expired.inc()
                log.warning("watch_expired", resource_version=last, pruned=mark)
                return
            pruned = mark
            if rows:
                data = b"".join(orjson.dumps({"type": "ADDED", "object": with_rv(s, e)}) + b"\n" for s, e in rows)
                last = rows[-1][0]
                try:
                    async with asyncio.timeout(self.write_timeout):
                        await response.write(data)
                except TimeoutError:
                    await self._cut_off(response, last)
                    return
                quiet_since = time.monotonic()
                if len(rows) == WATCH_BATCH:
                    continue
            elif time.monotonic() - quiet_since > BOOKMARK_EVERY:  # also finds clients that went away
                bookmark = {"type": "BOOKMARK", "object": {"kind": "Event", "apiVersion": "audit.k8s.io/v1",
                                                           "metadata": {"resourceVersion": str(last)}}}
                async with asyncio.timeout(self.write_timeout):
                    await response.write(orjson.dumps(bookmark) + b"\n")
                quiet_since = time.monotonic()
            try:
                async with asyncio.timeout(self.poll):
                    await flag.wait()
            except TimeoutError:
                pass

    async def _cut_off(self, response: web.StreamResponse, last: int) -> None:
        """The client does not read fast enough: one final line, then close (the rest would only pile up)."""
        self.metrics.watchers_cut_off.inc()
        log.warning("watch_cut_off", resource_version=last, write_timeout=self.write_timeout)
        message = (f"watch closed: the client did not read {WATCH_BATCH} events within {self.write_timeout}s; "
                   f"resume with resourceVersion={last}")
        await self._final(response, status(504, "SlowConsumer", message, resourceVersion=str(last)))

    @staticmethod
    async def _final(response: web.StreamResponse, error: dict[str, Any]) -> None:
        """One ERROR line ends the stream (as in a Kubernetes watch)."""
        line = orjson.dumps({"type": "ERROR", "object": error}) + b"\n"
        try:
            async with asyncio.timeout(1.0):
                await response.write(line)
                await response.write_eof()
        except (TimeoutError, ConnectionError):
            pass

    # ---- provenance ----

    async def object(self, request: web.Request) -> web.Response:
        m = request.match_info
        namespace = m.get("namespace", CLUSTER)
        plural, group = split_resource(m["resource"])
        await self._authorize(request, namespace)
        q = request.query
        raw = q.get("limit") or str(VERSIONS_LIMIT)
        if not raw.isdigit() or int(raw) < 1:
            raise ApiError(400, "BadRequest", "limit must be a number >= 1")
        limit = min(int(raw), MAX_LIMIT)
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
        group = groups[0]
        vs = provenance.versions(((s, e) for s, _, e in rows), builtin=provenance.is_builtin_group(group),
                                 first=omitted + 1)
        if not vs:
            raise ApiError(404, "NotFound", f"no successful changes recorded for {m['resource']} {where}")
        ref = {"group": group, "resource": plural, "namespace": namespace, "name": m["name"]}
        view = m["view"]
        meta: dict[str, Any] = {}
        if omitted:
            meta = {"omittedVersions": omitted, "message": f"only the newest {limit} changes were read; "
                    f"{omitted} older ones were left out (raise limit, at most {MAX_LIMIT}, to see more)"}
        head = {"apiVersion": API_VERSION, "metadata": meta, "objectRef": ref}
        lo, hi = vs[0]["version"], vs[-1]["version"]
        if view == "versions":
            return json_response({"kind": "ObjectVersionList", **head, "items": vs})
        if view == "spechistory":
            field = q.get("field", "spec")
            return json_response({"kind": "FieldHistory", **head, "field": field,
                                  "items": provenance.field_history(vs, field)})
        if view == "diff":
            end = self._version(q.get("end"), hi, "end")
            start = self._version(q.get("start"), max(end - 1, lo), "start")
            if not (lo <= start <= hi and lo <= end <= hi):
                more = f" (older ones left out by limit={limit})" if omitted else ""
                raise ApiError(400, "BadRequest", f"versions of {m['resource']} {where} go from {lo} to {hi}{more}")
            a, b = vs[start - lo], vs[end - lo]
            for v in (a, b):
                if not v["complete"]:
                    raise ApiError(409, "Conflict", f"version {v['version']} cannot be rebuilt: {v['reason']}")
            return json_response({"kind": "ObjectDiff", **head, **provenance.diff_versions(a, b, q.get("field", ""))})
        if view == "bisect":
            if not q.get("field") or "value" not in q:
                raise ApiError(400, "BadRequest", "bisect needs field and value")
            found = provenance.bisect(vs, q["field"], q["value"])
            if found is None:
                raise ApiError(404, "NotFound", f"no version of {m['resource']} {where} has {q['field']} == "
                               f"{q['value']}")
            return json_response({"kind": "BisectResult", **head, **found})
        raise ApiError(404, "NotFound", f"unknown view {view!r}: versions, spechistory, diff or bisect")

    @staticmethod
    def _version(raw: str | None, default: int, what: str) -> int:
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise ApiError(400, "BadRequest", f"{what} must be a version number >= 1")
        return int(raw)
