"""Where each event came from, through the API: filters, annotations, and object histories that never
mix two clusters (issue 12)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from kube_audit.contract import CLUSTER_ANNOTATION, SOURCE_ANNOTATION
from kube_audit.model.source import SourceId
from tailer.api.routes import PREFIX
from tests.helpers.apitest import SCENARIO, Api, api_fixture, resource_tracker  # noqa: F401 - fixtures

EVENTS = PREFIX + "/auditevents"
WEB = PREFIX + "/namespaces/shop/deployments.apps/web"
EU, US = SourceId("eu", "apiserver-0"), SourceId("us", "apiserver-0")


def us_copy(event: dict[str, Any]) -> dict[str, Any]:
    """The same-named object in another cluster: other requests, other replicas."""
    def shift(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: v + 40 if k == "replicas" and isinstance(v, int) else shift(v) for k, v in node.items()}
        return [shift(v) for v in node] if isinstance(node, list) else node

    return {**shift(event), "auditID": "us-" + event["auditID"]}


async def two_clusters(api: Api) -> None:
    await api.insert(SCENARIO, EU)
    await api.insert([us_copy(e) for e in SCENARIO], US)


def ids(body: dict[str, Any]) -> list[str]:
    return [i["auditID"] for i in body["items"]]


async def test_lists_filter_by_cluster_and_source_and_say_where_each_came_from(api: Api) -> None:
    await two_clusters(api)
    await api.insert([{**us_copy(SCENARIO[0]), "auditID": "other"}], SourceId("us", "apiserver-1"))
    eu = await api.get(EVENTS, cluster="eu")
    assert ids(eu) == [e["auditID"] for e in SCENARIO]
    notes = eu["items"][0]["metadata"]["annotations"]
    assert notes[CLUSTER_ANNOTATION] == "eu" and notes[SOURCE_ANNOTATION] == "apiserver-0"
    assert len(ids(await api.get(EVENTS, cluster="us"))) == len(SCENARIO) + 1
    assert ids(await api.get(EVENTS, fieldSelector="cluster=us,source=apiserver-1")) == ["other"]
    assert len(ids(await api.get(EVENTS, source="apiserver-0"))) == 2 * len(SCENARIO)
    assert ids(await api.get(EVENTS, cluster="nowhere")) == [] and ids(await api.get(EVENTS, cluster="")) == []
    bad = await api.get(EVENTS, expect=400, fieldSelector="cluster!=eu")
    assert "cluster=" in bad["message"]


async def test_a_watch_filters_by_cluster(api: Api) -> None:
    await two_clusters(api)
    resp = await api.client.get(EVENTS, headers={"Authorization": "Bearer admin-token"},
                                params={"watch": "true", "resourceVersion": "0", "timeoutSeconds": "1", "cluster": "us"})
    async with asyncio.timeout(20):
        lines = [orjson.loads(line) for line in (await resp.content.read()).splitlines()]
    added = [line["object"] for line in lines if line["type"] == "ADDED"]
    assert [o["auditID"] for o in added] == ["us-" + e["auditID"] for e in SCENARIO]
    assert {o["metadata"]["annotations"][CLUSTER_ANNOTATION] for o in added} == {"us"}


async def test_an_object_in_two_clusters_needs_a_cluster(api: Api) -> None:
    await two_clusters(api)
    for view in ("versions", "spechistory", "diff", "bisect"):
        refused = await api.get(WEB + "/" + view, expect=409)
        assert refused["kind"] == "Status" and refused["reason"] == "Conflict"
        assert "'eu', 'us'" in refused["message"] and "cluster=" in refused["message"]
    eu = await api.get(WEB + "/versions", cluster="eu")
    us = await api.get(WEB + "/versions", cluster="us")
    assert eu["objectRef"]["cluster"] == "eu" and us["objectRef"]["cluster"] == "us"
    assert {v["auditID"] for v in eu["items"]} <= {e["auditID"] for e in SCENARIO}
    assert all(v["auditID"].startswith("us-") for v in us["items"]) and len(us["items"]) == len(eu["items"])
    replicas = await api.get(WEB + "/spechistory", cluster="us", field="spec.replicas")
    values = [i["value"] for i in replicas["items"]]
    assert values and all(v is None or v >= 40 for v in values) and any(v is not None for v in values)
    missing = await api.get(WEB + "/versions", expect=404, cluster="ap")  # a cluster that sent nothing: nothing
    assert missing["message"].endswith("from cluster 'ap'")
    one = await api.get(WEB + "/versions", source="apiserver-0", cluster="eu")
    assert len(one["items"]) == len(eu["items"])


async def test_one_cluster_needs_no_parameter(api: Api) -> None:
    await api.insert(SCENARIO, EU)
    await api.insert([{**SCENARIO[0], "auditID": "elsewhere", "objectRef": {**SCENARIO[0]["objectRef"], "name": "db"}}],
                     US)  # another cluster, another object: web's history is still one cluster's
    body = await api.get(WEB + "/versions")
    assert body["objectRef"]["cluster"] == "eu" and body["items"]
