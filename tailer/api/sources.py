"""``sources`` on the audit API (issue 12): the forwarders the tailer heard from, cluster-scoped.

    GET {PREFIX}/sources[?cluster=C]           a SourceList (or a Table for kubectl get)
    GET {PREFIX}/sources/{name}[?cluster=C]    one Source; without ?cluster the name must be unambiguous

Authorized like the events (authz.py), on the resource ``sources`` at the cluster scope (``list``,
``get``). Unknown: 404, a name in several clusters without ?cluster: 409, both as a Kubernetes Status.
Also here: the ``Warning`` headers of lists and object views whose time range crosses a known gap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web

from kube_audit.contract import PREFIX, SOURCES
from tailer.api import resource
from tailer.api.authz import CLUSTER
from tailer.api.errors import ApiError
from tailer.sources.state import crossed, item, source_list

if TYPE_CHECKING:
    from tailer.api.routes import AuditApi

R = TypeVar("R", bound=web.StreamResponse)
# no selectors: a filter we would silently ignore would answer "everything" (a 400 instead, as for events)
PARAMS = {"cluster", "pretty", "timeout", "limit", "continue", "resourceVersion", "resourceVersionMatch",
          "includeObject"}
COLUMNS = [{"name": name, "type": kind, "format": "", "description": field, "priority": priority}
           for name, kind, field, priority in (
               ("Name", "string", "name", 0), ("Cluster", "string", "cluster", 0), ("State", "string", "state", 0),
               ("Last Seen", "string", "lastSeen", 0), ("Lag", "integer", "lagBytes", 0),
               ("Gap Bytes", "integer", "gapBytes", 0), ("Last Event", "string", "lastEventTime", 1))]


def add_routes(router: web.UrlDispatcher, api: AuditApi) -> None:
    async def listing(request: web.Request) -> web.StreamResponse:
        return await list_sources(api, request)

    async def one(request: web.Request) -> web.StreamResponse:
        return await get_source(api, request)

    router.add_get(f"{PREFIX}/{SOURCES}", api._wrap("sources", listing))
    router.add_get(f"{PREFIX}/{SOURCES}/{{name}}", api._wrap("sources", one))


def _stage(api: AuditApi) -> Any:
    if api.sources is None:
        raise ApiError(503, "ServiceUnavailable", "this tailer has no sources stage")
    return api.sources


async def _items(api: AuditApi, request: web.Request, verb: str) -> list[dict[str, Any]]:
    resource.check_params(request.query, PARAMS)
    await api._authorize(request, CLUSTER, verb, SOURCES)
    stage = _stage(api)
    rows, now = await stage.rows(), time.time()
    cluster = request.query.get("cluster")
    return [item(r, now, stage.rules) for r in rows if cluster is None or r.source.cluster == cluster]


async def list_sources(api: AuditApi, request: web.Request) -> web.Response:
    items = await _items(api, request, "list")
    version = resource.table_version(request.headers.get("Accept", ""))
    if version:
        return _json(_table(version, items), f"application/json;as=Table;v={version};g=meta.k8s.io")
    body = source_list([], 0, _stage(api).rules)
    return _json({**body, "items": items})


async def get_source(api: AuditApi, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = [i for i in await _items(api, request, "get") if i["name"] == name]
    if not found:
        where = f' in cluster "{request.query["cluster"]}"' if "cluster" in request.query else ""
        raise ApiError(404, "NotFound", f'sources "{name}" not found{where}')
    if len(found) > 1:
        clusters = ", ".join(repr(i["cluster"]) for i in found)
        raise ApiError(409, "Conflict", f'source "{name}" is known in clusters {clusters}; name one with ?cluster=')
    version = resource.table_version(request.headers.get("Accept", ""))
    if version:
        return _json(_table(version, found), f"application/json;as=Table;v={version};g=meta.k8s.io")
    return _json(found[0])


def _table(version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [{"cells": [i["name"], i["cluster"], i["state"], i["lastSeen"], i["lagBytes"], i["gapBytes"],
                       i["lastEventTime"]],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": i["metadata"]}}
            for i in items]
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": {}, "columnDefinitions": COLUMNS,
            "rows": rows}


def _json(body: Any, content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(body), headers={"Content-Type": content_type})


def warn(api: AuditApi, response: R, times: Iterable[float | None]) -> R:
    """Add a ``Warning: 299 - "..."`` header (kubectl prints it) per known gap the range of ``times``
    crosses (the stage's last refreshed view: no store read on the request's path)."""
    stage = api.sources
    shown = [t for t in times if t is not None]
    if stage is None or not shown or not stage.cached:
        return response
    for text in crossed(stage.cached, min(shown), max(shown)):
        response.headers.add("Warning", '299 - "' + text.replace('"', "'") + '"')
    return response
