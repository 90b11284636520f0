"""``auditevents`` as a Kubernetes resource, in process: filters (query and field selector), strict
parameters, Tables, paging with filters the store cannot apply, watch timeouts and re-authorization."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from kube_audit.contract import API_GROUP
from tailer.api.routes import PREFIX
from tests.helpers.apitest import ADMIN, SCENARIO, SHOP, Api, api_fixture, resource_tracker  # noqa: F401 - fixtures

EVENTS = PREFIX + "/auditevents"
SHOP_EVENTS = PREFIX + "/namespaces/shop/auditevents"
TABLE = {**ADMIN, "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


def other(audit_id: str, user: str, groups: list[str], verb: str, ref: dict[str, Any], code: int) -> dict[str, Any]:
    return {**SCENARIO[1], "auditID": audit_id, "verb": verb, "user": {"username": user, "groups": groups},
            "objectRef": ref, "responseStatus": {"code": code}}


MORE = [
    other("carol-1", "carol", ["dev-team", "system:authenticated"], "create",
          {"resource": "pods", "namespace": "dev", "name": "p1", "apiVersion": "v1"}, 201),
    other("carol-2", "carol", ["dev-team", "system:authenticated"], "delete",
          {"resource": "configmaps", "namespace": "shop", "name": "cfg", "apiVersion": "v1"}, 200),
    other("dave-1", "dave", ["ops"], "update",
          {"resource": "deployments", "namespace": "dev", "name": "api", "apiGroup": "apps", "apiVersion": "v1"}, 409),
]


def ids(body: dict[str, Any]) -> list[str]:
    return [f"{e['auditID'][-2:] if e['auditID'].startswith('0000') else e['auditID']}" for e in body["items"]]


async def test_filters_as_query_parameters_and_field_selectors(api: Api) -> None:
    await api.insert(SCENARIO + MORE)
    both = await api.get(EVENTS, verbs="create,delete")  # the KEP's verbs list
    assert [e["verb"] for e in both["items"]] == ["create", "create", "delete", "create", "delete"]
    assert ids(await api.get(EVENTS, group="dev-team")) == ["carol-1", "carol-2"]
    assert ids(await api.get(EVENTS, group=["ops", "dev-team"])) == ["carol-1", "carol-2", "dave-1"]
    assert ids(await api.get(EVENTS, apiGroup="")) == ["carol-1", "carol-2"]  # the core group
    assert ids(await api.get(EVENTS, resource="deployments.apps", namespace="dev")) == ["dave-1"]
    assert ids(await api.get(EVENTS, fieldSelector="user.username=bob@example.com,verb=patch")) == ["08", "12"]
    assert ids(await api.get(EVENTS, fieldSelector="objectRef.resource=deployments,objectRef.apiGroup=apps,"
                                                   "objectRef.name=api")) == ["dave-1"]
    assert ids(await api.get(EVENTS, fieldSelector="responseStatus.code=422")) == ["05"]
    assert ids(await api.get(SHOP_EVENTS, fieldSelector="user.username!=alice@example.com")) == ["08", "12", "carol-2"]
    assert ids(await api.get(EVENTS, fieldSelector="metadata.namespace=dev,verb!=create")) == ["dave-1"]
    assert ids(await api.get(EVENTS, fieldSelector="stage=RequestReceived")) == ["01"]
    item = (await api.get(EVENTS, fieldSelector="metadata.name=dave-1"))["items"][0]
    assert item["metadata"]["name"] == "dave-1" and item["metadata"]["namespace"] == "dev"
    assert item["kind"] == "AuditEvent" and item["apiVersion"] == f"{API_GROUP}/v1alpha1"


@pytest.mark.parametrize("params", [
    {"apiGroupz": "apps"}, {"verbs ": "get"}, {"fieldSelector": "spec.replicas=3"}, {"fieldSelector": "verb"},
    {"labelSelector": "app=web"}, {"includeObject": "All"}, {"timeoutSeconds": "\u0661"},
    {"user": "alice", "fieldSelector": "user.username=bob"}, {"resourceVersionMatch": "Newest"},
])
async def test_what_we_cannot_honour_is_a_400_never_everything(api: Api, params: dict[str, str]) -> None:
    """Regression: ?apiGroup=, ?verbs= and ?fieldSelector= were ignored and answered every event."""
    await api.insert(SCENARIO)
    body = await api.get(EVENTS, expect=400, **params)
    assert (body["kind"], body["reason"]) == ("Status", "BadRequest")
    await api.get(PREFIX + "/namespaces/shop/deployments/web/versions", expect=400, verb="get")


async def test_the_old_paths_take_the_new_filters_too(api: Api) -> None:
    await api.insert(SCENARIO + MORE)
    assert ids(await api.get(PREFIX + "/events", verbs="update", apiGroup="apps")) == ["11", "dave-1"]


async def test_a_page_filtered_here_is_short_and_continues(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from tailer.api import routes

    monkeypatch.setattr(routes, "SCAN_BATCH", 3)
    monkeypatch.setattr(routes, "MAX_SCAN", 6)
    await api.insert(SCENARIO + MORE)
    seen, token, pages = [], None, 0
    while True:
        page = await api.get(EVENTS, verbs="create,update", limit="2", **({"continue": token} if token else {}))
        seen += ids(page)
        pages += 1
        token = page["metadata"].get("continue")
        if not token:
            break
    assert seen == ["01", "01", "11", "carol-1", "dave-1"] and pages >= 3


async def test_server_side_printing(api: Api) -> None:
    await api.insert(SCENARIO + MORE)
    resp = await api.client.get(SHOP_EVENTS, headers=TABLE, params={"limit": "3"})
    body = await resp.json()
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json;as=Table")
    assert body["kind"] == "Table" and body["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"].upper() for c in body["columnDefinitions"]] == ["TIME", "USER", "VERB", "RESOURCE", "NAME", "CODE",
                                                                       "CLUSTER", "SOURCE"]
    assert [c["priority"] for c in body["columnDefinitions"]][-2:] == [1, 1]  # kubectl shows them with -o wide
    assert body["rows"][1]["cells"] == [SCENARIO[1]["stageTimestamp"], "alice@example.com", "create", "deployments",
                                        "web", 201, "", ""]
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert body["rows"][0]["object"]["metadata"]["namespace"] == "shop" and body["metadata"]["continue"]
    full = await api.client.get(SHOP_EVENTS, headers=TABLE, params={"includeObject": "Object", "limit": "1"})
    assert (await full.json())["rows"][0]["object"]["auditID"] == SCENARIO[0]["auditID"]


async def read_lines(resp: Any) -> list[dict[str, Any]]:
    async with asyncio.timeout(20):
        return [orjson.loads(line) for line in (await resp.content.read()).splitlines()]


async def test_watch_ends_after_timeout_seconds_and_prints_tables(api: Api) -> None:
    await api.insert(SCENARIO)
    resp = await api.client.get(SHOP_EVENTS, headers=TABLE, params={
        "watch": "true", "resourceVersion": "0", "timeoutSeconds": "1", "fieldSelector": "verb=create"})
    lines = await read_lines(resp)  # the stream ends by itself
    assert [line["type"] for line in lines] == ["ADDED", "ADDED"]
    assert all(line["object"]["kind"] == "Table" and len(line["object"]["rows"]) == 1 for line in lines)


async def test_a_revoked_watch_ends_with_403(api: Api) -> None:
    """Regression: a watch was authorized once; a token removed from the file kept streaming forever."""
    await api.insert(SCENARIO[:2])
    api.api.watches.recheck = 0.05
    resp = await api.client.get(SHOP_EVENTS, headers=SHOP, params={"watch": "true", "resourceVersion": "0"})
    assert resp.status == 200
    assert orjson.loads(await resp.content.readline())["type"] == "ADDED"
    api.tokens.write_text("admin-token,admin,*\nshop-token,shopper,staging\n")  # shop taken away
    lines = await read_lines(resp)
    final = lines[-1]
    assert final["type"] == "ERROR" and (final["object"]["code"], final["object"]["reason"]) == (403, "Forbidden")
    assert api.api.metrics.watchers_revoked._value.get() == 1


async def test_a_broken_token_file_refuses_every_request(api: Api) -> None:
    api.tokens.write_text("admin-token,admin\n")  # malformed: fail closed
    body = await api.get(EVENTS, expect=503)
    assert "token file is unusable" in body["message"]
    assert api.api.metrics.api_requests.labels("events", "503")._value.get() == 1
    api.tokens.write_text("admin-token,admin,*\n")
    await api.get(EVENTS)


async def test_discovery_documents(api: Api) -> None:
    groups = await api.get("/apis", headers={})
    assert [g["name"] for g in groups["groups"]] == [API_GROUP]
    group = await api.get(f"/apis/{API_GROUP}", headers={})
    assert group["preferredVersion"]["groupVersion"] == f"{API_GROUP}/v1alpha1"
    resources = await api.get(PREFIX, headers={})
    (events,) = [r for r in resources["resources"] if r["name"] == "auditevents"]
    assert events["namespaced"] and events["verbs"] == ["list", "watch"] and events["kind"] == "AuditEvent"
    assert {r["name"] for r in resources["resources"]} >= {"objects/versions", "objects/diff", "objects/bisect"}
    v2 = await api.get("/openapi/v2", headers={})
    assert any(d.get("x-kubernetes-group-version-kind") for d in v2["definitions"].values())
    index = await api.get("/openapi/v3", headers={})
    (url,) = [p["serverRelativeURL"] for p in index["paths"].values()]
    assert "components" in await api.get(url, headers={})
