"""kube.py and the ConfigMap writer against the fake Kubernetes API (tests/fakekube.py), real client."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_audit.contract import ANNOTATION, decode_entries
from kube_audit.kube.aio import AsyncKube
from kube_audit.kube.blocking import Kube
from tailer.configmaps.writer import ConfigMapWriter
from tailer.errors import Conflict, Forbidden, KubeUnconfigured, NotFound, TooLarge, Unavailable
from tailer.metrics import TailerMetrics
from tailer.settings import ConfigMapSettings
from tests.helpers.fakekube import FakeKube

SA = "system:serviceaccount:kube-audit:kube-audit-tailer"
_ids = itertools.count(1)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeKube]:
    with FakeKube() as f:
        f.add_resource("example.com", "v1", "databases", "Database")
        f.add_resource("example.com", "v1", "clusterdatabases", "ClusterDatabase", namespaced=False)
        f.kubeconfig = f.write_kubeconfig(tmp_path / "kubeconfig")  # type: ignore[attr-defined]
        yield f


async def eventually(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` on the loop until truthy (the async twin of conftest.wait_for)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)  # polling interval, not synchronisation
    return result


def audit(verb: str, name: str = "orders", *, body: Any = None, response: Any = None, sub: str = "",
          user: str = "bob@example.com", code: int = 200, namespace: str = "shop", resource: str = "databases",
          stage: str = "ResponseComplete", second: int | None = None) -> dict[str, Any]:
    n = next(_ids)
    ref = {"resource": resource, "apiGroup": "example.com", "apiVersion": "v1", "name": name}
    if namespace:
        ref["namespace"] = namespace
    if sub:
        ref["subresource"] = sub
    e: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": f"audit-{n:05d}",
        "stage": stage, "verb": verb, "user": {"username": user, "groups": ["system:authenticated"]},
        "objectRef": ref, "responseStatus": {"code": code},
        "stageTimestamp": f"2026-11-20T09:{(second if second is not None else n) // 60 % 60:02d}:"
                          f"{(second if second is not None else n) % 60:02d}.000000Z",
    }
    if body is not None:
        e["requestObject"] = body
    if response is not None:
        e["responseObject"] = response
    return e


def entries(fake: FakeKube, name: str = "audit-databases-orders", namespace: str = "shop") -> list[dict[str, Any]]:
    cm = fake.get("", "configmaps", namespace, name)
    return decode_entries(cm) if cm else []


def settings(**kw: Any) -> ConfigMapSettings:
    return ConfigMapSettings(**{"flush_interval": 0.02, "retry_max_wait": 0.2, "service_account": SA, **kw})


# --- kube.py ------------------------------------------------------------------------------
# aiohttp warns about any request body above 1 MiB; this test sends one on purpose (the apiserver's 422)
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
def test_errors_are_mapped_to_our_tree(fake: FakeKube) -> None:
    kube = Kube.connect(str(fake.kubeconfig))
    try:
        assert kube.namespace == "default"
        with pytest.raises(NotFound):
            kube.get_configmap("shop", "nope")
        cm = kube.create_configmap("shop", {"metadata": {"name": "c"}, "data": {"k": "v"}})
        with pytest.raises(Conflict):
            kube.create_configmap("shop", {"metadata": {"name": "c"}})
        kube.replace_configmap("shop", "c", cm)
        with pytest.raises(Conflict):
            kube.replace_configmap("shop", "c", cm)  # stale resourceVersion
        with pytest.raises(TooLarge):
            kube.create_configmap("shop", {"metadata": {"name": "big"}, "data": {"k": "x" * 1_100_000}})
        fake.denied.add(("patch", "databases"))
        fake.create("example.com", "v1", "databases", "shop", "orders")
        with pytest.raises(Forbidden):
            kube.merge_patch("example.com", "v1", "databases", "shop", "orders", {"metadata": {}})
        fake.unavailable, fake.retry_after = True, "7"
        with pytest.raises(Unavailable) as info:
            kube.get_configmap("shop", "c")
        assert info.value.retry_after == 7.0 and info.value.status == 503
        fake.stop()
        with pytest.raises(Unavailable):  # nobody listening
            kube.get_configmap("shop", "c")
    finally:
        kube.close()


def test_no_cluster_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnconfigured):
        Kube.connect(str(tmp_path / "missing"))


def test_discovery_like_kubectl(fake: FakeKube) -> None:
    kube = Kube.connect(str(fake.kubeconfig))
    try:
        for spelling in ("databases", "databases.example.com", "database", "Database"):
            r = kube.resolve(spelling)
            assert (r.group, r.version, r.plural, r.kind, r.namespaced) == ("example.com", "v1", "databases",
                                                                            "Database", True)
        assert kube.resolve("configmaps").api_version == "v1"
        assert kube.resolve("databases", api_version="example.com/v1").plural == "databases"
        with pytest.raises(NotFound):
            kube.resolve("widgets")
        with pytest.raises(NotFound):
            kube.resolve("databases.other.io")
    finally:
        kube.close()


async def test_token_review_and_subject_access_review(fake: FakeKube) -> None:
    fake.tokens["good"] = ("alice", ["dev", "system:authenticated"])
    fake.allowed.add(("group:dev", "get", "auditevents", "shop"))
    kube = await AsyncKube.connect(str(fake.kubeconfig))
    try:
        assert await kube.token_review("good") == ("alice", ("dev", "system:authenticated"), ())
        assert await kube.token_review("bad") is None
        assert await kube.subject_access_review("alice", ("dev",), "shop", "get", "auditevents") is True
        assert await kube.subject_access_review("alice", ("dev",), "prod", "get", "auditevents") is False
        assert await kube.subject_access_review("mallory", (), "shop", "get", "auditevents") is False
        fake.denied.add(("create", "tokenreviews"))
        with pytest.raises(Forbidden):
            await kube.token_review("good")
    finally:
        await kube.close()


# --- the writer ---------------------------------------------------------------------------
class Running:
    def __init__(self, writer: ConfigMapWriter) -> None:
        self.writer = writer
        self.task = asyncio.create_task(writer.run(), name="configmap-writer")

    async def stop(self) -> None:
        await self.writer.stop(5.0)
        await self.task

    def metric(self, name: str, **labels: str) -> float:
        return self.writer.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def start_writer(fake: FakeKube, **kw: Any) -> Running:
    kube = await AsyncKube.connect(str(fake.kubeconfig))
    return Running(ConfigMapWriter(kube, settings(**kw), TailerMetrics(), retry_initial=0.01))


def database(name: str = "orders", replicas: int = 1, uid: str = "u-orders", rv: str = "1") -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Database",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": rv},
            "spec": {"replicas": replicas}}


async def test_an_entry_for_each_verb_and_the_annotation(fake: FakeKube) -> None:
    created = fake.create("example.com", "v1", "databases", "shop", "orders", {"spec": {"replicas": 1}})
    uid = created["metadata"]["uid"]
    w = await start_writer(fake)
    try:
        events = [
            audit("create", body=database(), response=database(uid=uid), code=201),
            audit("patch", body={"spec": {"replicas": 2}}),
            audit("update", body=database(replicas=3, rv="3"), response=database(replicas=3, uid=uid)),
            audit("patch", body={"status": {"ready": True}}, sub="status"),
            audit("patch", body={"spec": {"replicas": 9}}, code=403, user="mallory"),
            audit("get"), audit("patch", stage="RequestReceived"), audit("patch", user=SA),
            {**audit("patch"), "objectRef": {"resource": "databases", "apiGroup": "example.com"}},  # no name
            audit("patch", resource="configmaps"),  # not tracked: core group
        ]
        w.writer.offer(events)
        got = await eventually(lambda: len(entries(fake)) == 5 and entries(fake), what="5 entries")
        assert [(e["verb"], e["subresource"], e["code"], e["change"]) for e in got] == [
            ("create", "", 201, "created"),
            ("patch", "", 200, "spec.replicas: 1 -> 2"),
            ("update", "", 200, "spec.replicas: 2 -> 3"),
            ("patch", "status", 200, "status.ready: true"),
            ("patch", "", 403, "failed (403)"),
        ]
        assert [e["auditID"] for e in got] == [e["auditID"] for e in events[:5]]
        cm = fake.get("", "configmaps", "shop", "audit-databases-orders")
        assert cm is not None
        assert cm["metadata"]["ownerReferences"] == [{"apiVersion": "example.com/v1", "kind": "Database",
                                                      "name": "orders", "uid": uid}]
        obj = await eventually(lambda: (o := fake.get("example.com", "databases", "shop", "orders"))
                               and ANNOTATION in o["metadata"].get("annotations", {}) and o, what="annotation")
        assert obj["metadata"]["annotations"][ANNOTATION] == "audit-databases-orders"
        w.writer.offer([audit("delete", response=database(replicas=3, uid=uid))])
        await eventually(lambda: len(entries(fake)) == 6, what="delete entry")
        assert entries(fake)[-1]["change"] == "deleted"
        patches = [p for m, p, _ in fake.requests if m == "PATCH"]
        assert len(patches) == 1, patches  # the annotation is set once
        # (the gauge drops after the write the fake has already seen: wait for it, do not race it)
        await eventually(lambda: w.metric("tailer_configmap_pending_entries") == 0, what="no entry pending")
    finally:
        await w.stop()


async def test_owner_is_read_when_the_event_has_no_object_and_cluster_scope(fake: FakeKube) -> None:
    obj = fake.create("example.com", "v1", "clusterdatabases", "", "global")
    w = await start_writer(fake, cluster_scope_namespace="audit-ns")
    try:
        w.writer.offer([audit("patch", "global", resource="clusterdatabases", namespace="")])  # Metadata level
        got = await eventually(lambda: entries(fake, "audit-clusterdatabases-global", "audit-ns"), what="entry")
        assert got[0]["change"] == "patched"
        cm = fake.get("", "configmaps", "audit-ns", "audit-clusterdatabases-global")
        assert cm is not None and cm["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
        # an object that is gone without a trace gets no ConfigMap (nothing would ever clean it up)
        w.writer.offer([audit("patch", "ghost")])
        await eventually(lambda: w.metric("tailer_configmap_writes_total", result="gone") == 1, what="gone")
        assert fake.get("", "configmaps", "shop", "audit-databases-ghost") is None
    finally:
        await w.stop()


async def test_writes_are_batched_per_object(fake: FakeKube) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    w = await start_writer(fake, flush_interval=3600)  # nothing is written until stop
    try:
        w.writer.offer([audit("patch", body={"spec": {"replicas": i}}) for i in range(50)])
        assert w.metric("tailer_configmap_pending_entries") == 50
    finally:
        await w.stop()
    assert len(entries(fake)) == 50
    assert fake.writes("configmaps") == 1


async def test_two_writers_lose_no_entry_through_conflicts(fake: FakeKube) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    a, b = await start_writer(fake, flush_interval=0.001), await start_writer(fake, flush_interval=0.001)
    try:
        sent = []
        for i in range(120):
            e = audit("patch", body={"spec": {"replicas": i}})
            sent.append(e["auditID"])
            (a if i % 2 else b).writer.offer([e])
            if i % 3 == 0:
                (b if i % 2 else a).writer.offer([e])  # both replicas saw it: must not be duplicated
            if i % 10 == 0:
                await asyncio.sleep(0.005)  # let both writers interleave (pacing, not synchronisation)
        await eventually(lambda: len(entries(fake)) >= len(sent), what="every entry")
        await eventually(lambda: a.metric("tailer_configmap_pending_entries") == 0
                         and b.metric("tailer_configmap_pending_entries") == 0, what="drained")
    finally:
        await a.stop()
        await b.stop()
    assert sorted(e["auditID"] for e in entries(fake)) == sorted(sent)
    assert 409 in {s for _, _, s in fake.requests}, "the test should have provoked conflicts"


async def test_a_full_configmap_trims_oldest_and_stays_valid(fake: FakeKube) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    w = await start_writer(fake, max_bytes=4096)
    try:
        for i in range(100):
            w.writer.offer([audit("patch", body={"spec": {"note": f"{i:03d}" + "x" * 60}}, second=i)])
        await eventually(lambda: w.metric("tailer_configmap_pending_entries") == 0, what="drained")
    finally:
        await w.stop()
    cm = fake.get("", "configmaps", "shop", "audit-databases-orders")
    assert cm is not None and len(cm["data"]["entries.json"].encode()) <= 4096
    got = json.loads(cm["data"]["entries.json"])
    assert 10 < len(got) < 100 and got[-1]["change"].startswith("spec.note: 099")
    assert [e["time"] for e in got] == sorted(e["time"] for e in got)
    assert w.metric("tailer_configmap_trimmed_entries_total") == 100 - len(got)


async def test_api_outage_then_catch_up_and_a_bounded_backlog(fake: FakeKube) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    fake.unavailable = True
    w = await start_writer(fake, max_pending=30)
    try:
        w.writer.offer([audit("patch", body={"spec": {"replicas": i}}) for i in range(40)])
        assert w.metric("tailer_configmap_dropped_entries_total", reason="backlog_full") == 10
        await eventually(lambda: w.metric("tailer_configmap_writes_total", result="unavailable") >= 3, what="retries")
        assert w.metric("tailer_configmap_pending_entries") == 30
        fake.unavailable = False
        await eventually(lambda: len(entries(fake)) == 30, what="catch-up")
        await eventually(lambda: w.metric("tailer_configmap_pending_entries") == 0, what="drained")
    finally:
        await w.stop()


async def test_forbidden_drops_the_batch_and_says_so(fake: FakeKube) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    fake.denied.add(("create", "configmaps"))
    w = await start_writer(fake)
    try:
        w.writer.offer([audit("patch"), audit("patch")])
        await eventually(lambda: w.metric("tailer_configmap_dropped_entries_total", reason="error") == 2, what="drop")
        assert w.metric("tailer_configmap_writes_total", result="error") == 1
    finally:
        await w.stop()


async def test_api_authorizer_over_kubernetes_reviews(fake: FakeKube) -> None:
    from tailer.api.authz import build

    fake.tokens["good"] = ("alice", ["dev"])
    fake.allowed.add(("group:dev", "get", "auditevents", "shop"))
    authz = build("kubernetes", None, str(fake.kubeconfig))
    assert authz is not None
    try:
        who = await authz.authenticate("good")
        assert who is not None and who.user == "alice"
        assert await authz.allowed(who, "shop") is True
        assert await authz.allowed(who, "prod") is False
        assert await authz.authenticate("bad") is None
    finally:
        await authz.reviews.close()  # type: ignore[attr-defined]
