"""The API as a stage of its own: object views off the event loop, strict numbers, a Status for every
failure, watches that end when the tailer stops."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tailer.api.routes import PREFIX
from tailer.store import EventFilter
from tests.helpers.apitest import SCENARIO, Api, api_fixture, resource_tracker  # noqa: F401 - fixtures

WEB = PREFIX + "/namespaces/shop/deployments.apps/web"


def heavy_configmap(changes: int, width: int) -> list[dict[str, Any]]:
    """A ConfigMap of ``width`` keys created once and merge-patched ``changes`` times: replaying it is CPU."""
    ref = {"resource": "configmaps", "namespace": "shop", "name": "big", "apiVersion": "v1"}
    common = {"stage": "ResponseComplete", "objectRef": ref, "user": {"username": "alice"}, "level": "Request",
              "stageTimestamp": "2026-11-20T10:00:00Z"}
    data = {f"key-{i}": "x" * 40 for i in range(width)}
    events = [{**common, "auditID": "create", "verb": "create", "responseStatus": {"code": 201},
               "requestObject": {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                                 "metadata": {"name": "big", "namespace": "shop"}}}]
    events += [{**common, "auditID": f"patch-{i}", "verb": "patch", "responseStatus": {"code": 200},
                "requestObject": {"data": {f"key-{i % width}": f"value-{i}"}}} for i in range(changes)]
    return events


async def test_an_object_view_does_not_hold_the_event_loop(api: Api) -> None:
    """Regression: object views replayed patches on the event loop (?limit=5000 of a busy object: ~23 s
    during which no ack, probe or other request was served). Now they run in the query pool."""
    await api.insert(heavy_configmap(4999, 400))  # with its create: 5,000 changes
    view = asyncio.create_task(api.client.get(PREFIX + "/namespaces/shop/configmaps/big/versions",
                                              params={"limit": "5000"}, headers={"Authorization": "Bearer admin-token"}))
    served = 0
    while not view.done():  # the loop keeps serving while the view is being computed
        resp = await api.client.get("/healthz")
        assert resp.status == 200
        served += 1
    assert served >= 3, "the probe was not served while the object view was computed"
    resp = await view
    body = await resp.json()
    assert resp.status == 200 and len(body["items"]) == 5000
    assert body["items"][-1]["object"]["data"]["key-198"] == "value-4998"
    assert api.api.metrics.api_query_seconds._sum.get() > 0


@pytest.mark.parametrize("param,value", [
    ("code", "\u00b2\u00b2\u00b2"), ("code", "\u0663\u0660\u0664"), ("code", "4" * 5000), ("code", "-1"),
    ("limit", "\u0665"), ("limit", "9" * 5000), ("limit", "\u00b9"),
    ("resourceVersion", "\u0661\u0662"), ("resourceVersion", "7" * 5000),
])
async def test_odd_numbers_in_event_queries_are_a_400(api: Api, param: str, value: str) -> None:
    """Regression: '²' passed isdigit() and int() then raised (500); 5,000 digits exceeded int()'s limit
    (500); Arabic-Indic digits were read as numbers."""
    extra = {"watch": "true"} if param == "resourceVersion" else {}
    body = await api.get(PREFIX + "/events", expect=400, **{param: value}, **extra)
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 400, "BadRequest")


@pytest.mark.parametrize("param,value", [("limit", "\u00b2"), ("limit", "1" * 5000), ("start", "\u00b2"),
                                         ("start", "\u0661"), ("end", "5" * 5000), ("start", "v\u00b2")])
async def test_odd_numbers_in_object_views_are_a_400(api: Api, param: str, value: str) -> None:
    await api.insert(SCENARIO)
    body = await api.get(WEB + "/diff", expect=400, **{param: value})
    assert (body["kind"], body["code"]) == ("Status", 400)


async def test_kubeprovenance_v_prefixed_versions(api: Api) -> None:
    await api.insert(SCENARIO)
    plain = await api.get(WEB + "/diff", start="2", end="3")
    assert await api.get(WEB + "/diff", start="v2", end="v3") == plain


async def test_a_failing_query_answers_a_status(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: an unexpected error in a handler answered aiohttp's plain-text 500 page."""
    await api.insert(SCENARIO)

    async def broken(*args: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(api.store, "object_history", broken)
    body = await api.get(WEB + "/versions", expect=500)
    assert (body["kind"], body["reason"]) == ("Status", "InternalError")
    assert api.api.metrics.api_errors.labels("object", "internal")._value.get() == 1
    assert len((await api.get(PREFIX + "/events"))["items"]) == len(SCENARIO)  # the next request is fine


async def test_open_watches_end_when_the_tailer_stops(api: Api) -> None:
    await api.insert(SCENARIO)
    resp = await api.client.get(PREFIX + "/events", headers={"Authorization": "Bearer admin-token"},
                                params={"watch": "true", "resourceVersion": "0"})
    assert resp.status == 200
    api.hub.close()  # what the tailer does at shutdown
    async with asyncio.timeout(10):
        lines = (await resp.content.read()).splitlines()
    assert len(lines) == len(SCENARIO)  # every event, then a clean end of the stream
    await api.get(PREFIX + "/events", expect=503, watch="true")  # no new watch while stopping
    assert len(await api.store.events(EventFilter(), 0, 100)) == len(SCENARIO)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [300, 700])
async def test_one_deeply_nested_event_never_breaks_a_page_or_a_watch(api: Api, depth: int) -> None:
    """Regression: one stored event nested 300 levels deep made every list page and watch batch holding
    it answer 500 / ERROR (orjson stops at 255 levels), so a watcher could never get past it. Ingest now
    rejects such a record (the audit model bounds the depth); a row stored before that still must not
    break a page, so it is stored here past the model's check, as an older tailer stored it."""
    from kube_audit.model.audit import AuditEvent, Rejected, dumps, parse, parse_time, view

    deep = {**SCENARIO[1], "auditID": "deep", "requestObject": nested(depth)}
    assert isinstance(parse(deep), Rejected)
    data, slow = dumps(deep)
    legacy = AuditEvent(deep, view(deep), deep, data, parse_time(deep["stageTimestamp"]), slow)
    await api.store.insert([SCENARIO[0], legacy, SCENARIO[2]])
    body = await api.get(PREFIX + "/events")
    assert [e["auditID"] for e in body["items"]] == [SCENARIO[0]["auditID"], "deep", SCENARIO[2]["auditID"]]
    table = await api.client.get(PREFIX + "/auditevents", headers={
        "Authorization": "Bearer admin-token", "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        params={"includeObject": "Object"})
    assert table.status == 200 and len((await table.json())["rows"]) == 3
    resp = await api.client.get(PREFIX + "/events", headers={"Authorization": "Bearer admin-token"},
                                params={"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1"})
    async with asyncio.timeout(20):
        lines = [orjson.loads(line) for line in (await resp.content.read()).splitlines()]
    assert [line["object"]["auditID"] for line in lines] == [e["auditID"] for e in body["items"]]


async def test_the_query_pool_is_bounded(api: Api) -> None:
    """More object views than admitted answer 429 at once instead of queueing without end."""
    from tailer.api.queries import QueryPool

    await api.insert(SCENARIO)
    api.api.queries.close()
    api.api.queries = pool = QueryPool(workers=1, max_pending=1, metrics=api.api.metrics)
    pool._pending = 1  # one view already being computed
    body = await api.get(WEB + "/versions", expect=429)
    assert (body["kind"], body["reason"]) == ("Status", "TooManyRequests")
    assert api.api.metrics.api_query_rejected.labels("busy")._value.get() == 1
    pool._pending = 0
    assert (await api.get(WEB + "/versions"))["kind"] == "ObjectVersionList"
    pool.close()


async def test_a_slow_view_times_out_and_a_dead_worker_is_replaced(api: Api) -> None:
    import os
    import signal

    from tailer.api.queries import QueryPool

    await api.insert(SCENARIO + heavy_configmap(4999, 400))
    api.api.queries.close()
    api.api.queries = pool = QueryPool(workers=1, timeout=0.0, metrics=api.api.metrics)
    body = await api.get(WEB + "/versions", expect=504)  # a deadline of 0: never met
    assert (body["reason"], api.api.metrics.api_query_rejected.labels("timeout")._value.get()) == ("Timeout", 1)
    pool.timeout = 600.0
    big = PREFIX + "/namespaces/shop/configmaps/big/versions"
    view = asyncio.create_task(api.client.get(big, params={"limit": "5000"}, headers={"Authorization": "Bearer admin-token"}))
    async with asyncio.timeout(60):
        while not (pool._pool and getattr(pool._pool, "_processes", None)):
            await asyncio.sleep(0.01)  # polling for the worker to exist, not synchronisation of the outcome
    for pid in list(pool._pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)  # the OOM killer, say
    resp = await view
    assert resp.status == 503 and (await resp.json())["reason"] == "ServiceUnavailable"
    assert api.api.metrics.api_query_rejected.labels("broken")._value.get() == 1
    assert (await api.get(WEB + "/versions"))["kind"] == "ObjectVersionList"  # a new pool
    pool.close()
