"""The audit API in process (aiohttp test server) over SQLite and PostgreSQL: the recorded Deployment
scenario (versions, spechistory, diff, bisect), paging, watch resume, tokens, slow watchers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp.test_utils import TestClient, TestServer

from kube_audit.runtime.http import build_app
from tailer.api.routes import PREFIX, AuditApi, WatchHub
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter, Store
from tests.helpers.apitest import ADMIN, SCENARIO, SHOP, Api, GatedResponse, api_fixture, resource_tracker  # noqa: F401 - fixtures

WEB = PREFIX + "/namespaces/shop/deployments.apps/web"


def brief(v: dict[str, Any]) -> tuple[Any, ...]:
    obj = v["object"] or {}
    containers = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers")
    return (v["version"], v["verb"], v["user"].split("@")[0], v["complete"], v.get("reason"), v.get("patchType"),
            (obj.get("spec") or {}).get("replicas"), containers[0]["image"] if containers else None, v["deleted"])


async def test_scenario_versions(api: Api) -> None:
    await api.insert(SCENARIO[:6])
    await api.insert(SCENARIO[6:])
    body = await api.get(WEB + "/versions")
    assert body["kind"] == "ObjectVersionList"
    assert body["objectRef"] == {"group": "apps", "resource": "deployments", "namespace": "shop", "name": "web",
                                  "cluster": ""}
    smp = "patch replaces the list spec.template.spec.containers; a strategic merge patch would have merged it by key"
    assert [brief(v) for v in body["items"]] == [
        (1, "create", "alice", True, None, None, 1, "web:1.0", False),
        (2, "patch", "alice", True, None, "merge", 3, "web:1.0", False),
        (3, "patch", "alice", True, None, "json", 3, "web:1.1", False),
        (4, "patch", "alice", False, smp, "merge", None, None, False),
        (5, "patch", "bob", True, None, "merge", 3, "web:1.2", False),
        (6, "patch", "alice", False, "strategic merge directive '$patch' cannot be replayed", "strategic",
         None, None, False),
        (7, "patch", "alice", False, "no known state before this scale", "merge", None, None, False),  # scale
        (8, "update", "alice", True, None, None, 5, "web:2.0", False),
        (9, "patch", "bob", True, None, "merge", 2, "web:2.0", False),
        (10, "delete", "alice", True, None, None, None, None, True),
    ]
    v5 = body["items"][4]["object"]
    assert "managedFields" not in v5["metadata"] and v5["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    v8 = body["items"][8]["object"]
    assert v8["metadata"]["labels"] == {"app": "web"} and "paused" not in v8["spec"]
    # the same answer for the bare plural (one group has such an object)
    bare = await api.get(PREFIX + "/namespaces/shop/deployments/web/versions")
    assert bare["items"] == body["items"]


async def test_scenario_spechistory_diff_bisect(api: Api) -> None:
    await api.insert(SCENARIO)
    hist = await api.get(WEB + "/spechistory", field="spec.replicas")
    assert [(h["version"], h["value"], h["changes"]) for h in hist["items"]] == [
        (1, 1, [{"op": "add", "path": "spec.replicas", "to": 1}]),
        (2, 3, [{"op": "replace", "path": "spec.replicas", "from": 1, "to": 3}]),
        (4, None, None),
        (5, 3, None),
        (6, None, None),
        (7, None, None),  # kubectl scale, after a state that could not be rebuilt
        (8, 5, None),
        (9, 2, [{"op": "replace", "path": "spec.replicas", "from": 5, "to": 2}]),
        (10, None, [{"op": "remove", "path": "spec.replicas", "from": 2}]),
    ]
    spec = await api.get(WEB + "/spechistory")
    assert [h["version"] for h in spec["items"]] == list(range(1, 11))  # spec changed each time

    d = await api.get(WEB + "/diff", start="2", end="3", field="spec")
    assert d["changes"] == [{"op": "replace", "path": "spec.template.spec.containers[0].image",
                             "from": "web:1.0", "to": "web:1.1"}]
    assert (d["from"]["version"], d["to"]["version"]) == (2, 3)
    d = await api.get(WEB + "/diff", start="1", end="9", field="spec.replicas")
    assert d["changes"] == [{"op": "replace", "path": "spec.replicas", "from": 1, "to": 2}]
    d = await api.get(WEB + "/diff", start="8", end="9")
    assert d["changes"] == [{"op": "remove", "path": "metadata.labels.tier", "from": "frontend"},
                            {"op": "replace", "path": "spec.replicas", "from": 5, "to": 2}]
    d = await api.get(WEB + "/diff")  # default: the last two versions
    assert (d["from"]["version"], d["to"]["version"]) == (9, 10) and d["changes"][0]["op"] == "remove"
    bad = await api.get(WEB + "/diff", expect=409, start="3", end="4")
    assert bad["reason"] == "Conflict" and "version 4 cannot be rebuilt" in bad["message"]
    await api.get(WEB + "/diff", expect=400, start="1", end="99")

    b = await api.get(WEB + "/bisect", field="spec.replicas", value="3")
    assert (b["version"]["version"], b["value"], b["uncertain"], b["skippedVersions"]) == (2, 3, False, [])
    assert b["previous"]["version"] == 1
    b = await api.get(WEB + "/bisect", field="spec.template.spec.containers[0].image", value="web:1.2")
    assert (b["version"]["version"], b["uncertain"], b["skippedVersions"]) == (5, True, [4])
    b = await api.get(WEB + "/bisect", field="spec.replicas", value="5")
    assert (b["version"]["version"], b["uncertain"], b["skippedVersions"]) == (8, True, [4, 6, 7])
    await api.get(WEB + "/bisect", expect=404, field="spec.replicas", value="42")
    await api.get(WEB + "/bisect", expect=400, field="spec.replicas")
    await api.get(PREFIX + "/namespaces/shop/deployments.apps/nope/versions", expect=404)


async def test_events_filters_paging_and_list_metadata(api: Api) -> None:
    await api.insert(SCENARIO)
    everything = await api.get(PREFIX + "/events", limit="100")
    assert everything["kind"] == "AuditEventList" and len(everything["items"]) == len(SCENARIO)
    assert "continue" not in everything["metadata"]
    assert everything["metadata"]["resourceVersion"] == everything["items"][-1]["metadata"]["resourceVersion"]
    seen, token = [], None
    while True:
        page = await api.get(PREFIX + "/events", limit="4", **({"continue": token} if token else {}))
        seen += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert seen == everything["items"]
    bob = await api.get(PREFIX + "/events", user="bob@example.com", verb="patch")
    assert [e["auditID"][-2:] for e in bob["items"]] == ["08", "12"]
    failed = await api.get(PREFIX + "/namespaces/shop/events", code="422")
    assert [e["auditID"][-2:] for e in failed["items"]] == ["05"]
    window = await api.get(PREFIX + "/events", since="2026-11-20T10:00:11Z", until="2026-11-20T10:00:13Z")
    assert [e["auditID"][-2:] for e in window["items"]] == ["11", "12"]
    now = datetime.now(UTC) - timedelta(seconds=10)
    await api.insert([{**SCENARIO[0], "auditID": "recent", "stageTimestamp": now.isoformat()}])
    recent = await api.get(PREFIX + "/events", since="1m")
    assert [e["auditID"] for e in recent["items"]] == ["recent"]
    await api.get(PREFIX + "/events", expect=400, since="yesterday-ish")
    await api.get(PREFIX + "/events", expect=400, **{"continue": "garbage!"})
    await api.get(PREFIX + "/events", expect=400, code="99999999999999999999999")  # beyond 64 bits: not a 500
    await api.get(PREFIX + "/events", expect=400, watch="true", resourceVersion="1" + "0" * 30)


async def test_tokens_and_namespaces(api: Api) -> None:
    await api.insert(SCENARIO)
    await api.get(PREFIX + "/events", headers={}, expect=401)
    await api.get(PREFIX + "/events", headers={"Authorization": "Bearer wrong"}, expect=401)
    body = await api.get(PREFIX + "/events", headers=SHOP, expect=403)  # cluster-wide needs "*"
    assert body["message"] == ('auditevents.audit.kube-audit-forwarder.io is forbidden: User "shopper" cannot list '
                               'resource "auditevents" in API group "audit.kube-audit-forwarder.io" at the cluster scope')
    assert len((await api.get(PREFIX + "/events", headers=SHOP, namespace="shop"))["items"]) == len(SCENARIO)
    assert len((await api.get(PREFIX + "/namespaces/shop/events", headers=SHOP))["items"]) == len(SCENARIO)
    await api.get(PREFIX + "/namespaces/kube-system/events", headers=SHOP, expect=403)
    await api.get(WEB + "/versions", headers=SHOP)
    await api.get(PREFIX + "/namespaces/other/deployments/web/versions", headers=SHOP, expect=403)
    await api.get(PREFIX + "/nodes/n1/versions", headers=SHOP, expect=403)
    await api.get(PREFIX + "/events", headers=SHOP, expect=403, watch="true")


async def read_lines(resp: Any, n: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        line = await resp.content.readline()
        assert line, f"stream ended after {len(out)} lines"
        out.append(orjson.loads(line))
    return out


async def test_watch_resumes_from_a_resource_version_without_gaps(api: Api) -> None:
    await api.insert(SCENARIO[:5])
    url = PREFIX + "/namespaces/shop/events"
    resp = await api.client.get(url, headers=SHOP, params={"watch": "true", "resourceVersion": "0"})
    assert resp.status == 200
    first = await read_lines(resp, 5)
    assert [e["type"] for e in first] == ["ADDED"] * 5
    await api.insert(SCENARIO[5:8])
    first += await read_lines(resp, 3)
    resp.close()  # the client goes away
    await api.insert(SCENARIO[8:])  # meanwhile: more events, and one in another namespace
    await api.insert([{**SCENARIO[0], "auditID": "elsewhere", "objectRef": {"resource": "pods", "namespace": "x"}}])
    last = first[-1]["object"]["metadata"]["resourceVersion"]
    resp = await api.client.get(url, headers=SHOP, params={"watch": "true", "resourceVersion": last})
    rest = await read_lines(resp, len(SCENARIO) - 8)
    got = [(e["object"]["auditID"], e["object"]["stage"]) for e in first + rest]
    assert got == [(e["auditID"], e["stage"]) for e in SCENARIO]
    live = [{**SCENARIO[0], "auditID": "live"}]
    await api.insert(live)  # and it keeps streaming
    assert (await read_lines(resp, 1))[0]["object"]["auditID"] == "live"
    resp.close()


async def test_watch_from_now_sees_only_new_events(api: Api) -> None:
    await api.insert(SCENARIO[:3])
    resp = await api.client.get(PREFIX + "/events", headers=ADMIN, params={"watch": "1", "verb": "update"})
    assert resp.status == 200
    await api.insert(SCENARIO[3:])
    (line,) = await read_lines(resp, 1)
    assert line["object"]["verb"] == "update" and line["object"]["auditID"].endswith("11")
    resp.close()


class StuckResponse:
    """A watch client that stops reading: the first write never completes."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.calls = 0

    async def write(self, data: bytes) -> None:
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        self.lines.append(data)

    async def write_eof(self) -> None:
        pass


async def test_a_slow_watcher_is_cut_off_with_a_final_message(api: Api) -> None:
    await api.insert(SCENARIO)
    api.api.watches.write_timeout = 0.05
    stuck = StuckResponse()
    await api.api.watches.stream(stuck, EventFilter(), 0, api.hub.register())  # type: ignore[arg-type]
    (final,) = [orjson.loads(line) for line in stuck.lines]
    last = (await api.store.events(EventFilter(), 0, 100))[-1][0]
    assert final["type"] == "ERROR" and final["object"]["reason"] == "SlowConsumer"
    assert final["object"]["details"] == {"resourceVersion": str(last)}
    assert f"resume with resourceVersion={last}" in final["object"]["message"]
    assert api.api.metrics.watchers_cut_off._value.get() == 1


async def test_api_disabled_without_an_authorizer(store_target: str) -> None:
    store = await Store.open(store_target)
    app = build_app(TailerMetrics().registry)
    AuditApi(store, None, WatchHub(), TailerMetrics()).add_routes(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(PREFIX + "/events")
        assert resp.status == 503 and "--token-file" in (await resp.json())["message"]
    await store.close()


def aged(n: int) -> dict[str, Any]:
    """An event of day ``n`` in November 2026 (retention by age deletes the oldest days first)."""
    return {**SCENARIO[0], "auditID": f"aged-{n}", "stageTimestamp": f"2026-11-{n:02d}T00:00:00Z"}


async def prune_through(api: Api, day: int) -> tuple[int, int]:
    """Retention by age deletes the events of days 1..``day``."""
    nov = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    return await api.store.prune(86400.0, None, now=nov + (day + 0.5) * 86400)


async def test_watch_from_a_pruned_resource_version_is_gone(api: Api) -> None:
    """Regression: a watch resuming below what retention deleted silently skipped the deleted events."""
    await api.insert([aged(n) for n in range(1, 11)])
    rows = await api.store.events(EventFilter(), 0, 100)
    seqs = [s for s, _ in rows]
    assert await prune_through(api, 5) == (5, 0)
    url = PREFIX + "/events"
    gone = await api.get(url, expect=410, watch="true", resourceVersion=str(seqs[2]))
    assert (gone["kind"], gone["code"], gone["reason"]) == ("Status", 410, "Expired")
    assert gone["message"].startswith(f"too old resource version: {seqs[2]} ({seqs[4]})")
    for ok in (str(seqs[4]), "0"):  # from the last pruned event on, or from the oldest kept
        resp = await api.client.get(url, headers=ADMIN, params={"watch": "true", "resourceVersion": ok})
        assert resp.status == 200
        (first,) = await read_lines(resp, 1)
        assert first["object"]["auditID"] == "aged-6"
        resp.close()
    await prune_through(api, 10)  # everything goes: the head does not go back
    assert (await api.get(url))["metadata"]["resourceVersion"] == str(seqs[-1])


async def test_retention_overtaking_a_slow_watcher_ends_its_stream_with_410(api: Api) -> None:
    await api.insert([aged(n) for n in range(1, 6)])
    gated = GatedResponse()
    watcher = asyncio.create_task(api.api.watches.stream(gated, EventFilter(), 0, api.hub.register()))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await gated.writing.wait()  # it has read days 1..5
    await api.insert([aged(n) for n in range(6, 11)])
    assert await prune_through(api, 7) == (7, 0)  # days 6 and 7 were never read
    marked = (await api.store.events(EventFilter(), 0, 100))[0][0] - 1  # day 7's sequence
    api.hub.notify()  # the ring learns of the prune at its next read (at the latest after --watch-poll)
    async with asyncio.timeout(10):
        while api.api.watches.ring.pruned < marked:
            await asyncio.sleep(0.01)  # polling the ring's state, not synchronisation
    gated.gate.set()  # the watcher writes its first batch (days 1..5), then reads on
    async with asyncio.timeout(10):
        await watcher
    *added, final = gated.lines
    assert [e["object"]["auditID"] for e in added] == [f"aged-{n}" for n in range(1, 6)]
    assert final["type"] == "ERROR"
    assert (final["object"]["code"], final["object"]["reason"]) == (410, "Expired")
    assert api.api.metrics.watchers_expired._value.get() == 1


async def test_versions_are_capped_by_limit_and_numbered_as_if_all_were_read(api: Api) -> None:
    """Versions were rebuilt from an object's whole history: a Lease renewed every few seconds made one
    request read and replay all of it. Now the newest ``limit`` changes (default 1000)."""
    await api.insert(SCENARIO)  # 10 versions and a dry-run patch between them
    full = (await api.get(WEB + "/versions"))["items"]
    assert [v["version"] for v in full] == list(range(1, 11))
    for k in range(1, 12):  # the newest k changes: a dry run among them makes no version
        body = await api.get(WEB + "/versions", limit=str(k))
        n = len(body["items"])
        assert n in (k, k - 1)
        assert [v["version"] for v in body["items"]] == list(range(11 - n, 11))
        assert [v["resourceVersion"] for v in body["items"]] == [v["resourceVersion"] for v in full[10 - n:]]
        assert body["metadata"].get("omittedVersions", 0) == 10 - n
    d = await api.get(WEB + "/diff", limit="3")
    assert (d["from"]["version"], d["to"]["version"]) == (9, 10) and d["metadata"]["omittedVersions"] == 7
    bad = await api.get(WEB + "/diff", expect=400, limit="3", start="2", end="8")
    assert "go from 8 to 10 (older ones left out by limit=3)" in bad["message"]
    await api.get(WEB + "/versions", expect=400, limit="0")

    lease = {**SCENARIO[0], "objectRef": {"resource": "leases", "namespace": "shop", "name": "leader",
                                          "apiGroup": "coordination.k8s.io", "apiVersion": "v1"}, "verb": "update",
             "stage": "ResponseComplete", "responseStatus": {"code": 200}}
    await api.insert([{**lease, "auditID": f"renew-{i}", "stageTimestamp": f"2026-11-21T00:{i // 60 % 60:02d}:"
                       f"{i % 60:02d}.{i // 3600:06d}Z"} for i in range(3000)])
    body = await api.get(PREFIX + "/namespaces/shop/leases/leader/versions")
    assert len(body["items"]) == 1000 and body["items"][0]["version"] == 2001
    assert body["metadata"]["omittedVersions"] == 2000 and "2000 older ones were left out" in body["metadata"]["message"]
