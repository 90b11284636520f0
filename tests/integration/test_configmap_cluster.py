"""Audit ConfigMaps are written only for the cluster the tailer runs in (--cluster): another cluster's
events sent to the same tailer are stored and served, never written into this cluster (issue 12)."""

from __future__ import annotations

import asyncio

from kube_audit.kube.aio import AsyncKube
from kube_audit.model.source import SourceId
from tailer.configmaps.projection import CURSOR
from tailer.configmaps.writer import ConfigMapWriter
from tailer.ingest.pipeline import Origin
from tailer.metrics import TailerMetrics
from tailer.store import Store
from tests.helpers.fakekube import FakeKube
from tests.integration.test_configmap_projection import open_stage
from tests.integration.test_configmaps import audit, entries, eventually, fake, settings  # noqa: F401

EU, US = SourceId("eu", "apiserver-0"), SourceId("us", "apiserver-0")


async def test_the_projection_writes_its_own_cluster_only(fake: FakeKube, store_target: str) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    store = await Store.open(store_target)
    try:
        theirs = [audit("patch", body={"spec": {"replicas": 10 + i}}) for i in range(5)]
        ours = [audit("patch", body={"spec": {"replicas": i}}) for i in range(3)]
        await store.insert(theirs[:3], US)
        await store.insert(ours, EU)
        await store.insert(theirs[3:], US)  # the newest events are another cluster's: the cursor passes them
        stage = await open_stage(fake, store, cluster="eu")
        await eventually(lambda: stage.projection.read == 8, what="every event read")
        await eventually(lambda: len(entries(fake)) == 3, what="our 3 entries")
        await stage.stop()
        assert [e["auditID"] for e in entries(fake)] == [e["auditID"] for e in ours]
        assert await store.load_cursor(CURSOR) == 8
    finally:
        await store.close()


async def test_without_a_store_other_clusters_are_not_offered(fake: FakeKube) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    kube = await AsyncKube.connect(str(fake.kubeconfig))
    writer = ConfigMapWriter(kube, settings(), TailerMetrics(), retry_initial=0.01)  # --cluster "" (default)
    task = asyncio.create_task(writer.run())
    try:
        theirs, ours = audit("patch", body={"spec": {"replicas": 9}}), audit("patch", body={"spec": {"replicas": 1}})
        writer.offer([theirs], Origin(US))
        writer.offer([ours], Origin(SourceId("", "apiserver-0")))
        await eventually(lambda: entries(fake), what="an entry")
        assert [e["auditID"] for e in entries(fake)] == [ours["auditID"]]
    finally:
        await writer.stop(5.0)
        await asyncio.wait([task])
