"""The audit ConfigMaps as a projection of the store (tailer/configmaps/projection.py), on SQLite and
PostgreSQL, against the fake Kubernetes API; and a real tailer killed with SIGKILL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kube_audit.kube.aio import AsyncKube
from kube_audit.runtime.lifecycle import Deadline
from tailer.configmaps.projection import CURSOR, Projection
from tailer.configmaps.stage import ConfigMapStage
from tailer.configmaps.writer import ConfigMapWriter
from tailer.metrics import TailerMetrics
from tailer.store import EventFilter, Store
from tests.conftest import wait_for
from tests.helpers.fakekube import FakeKube
from tests.helpers.sender import Sender
from tests.integration.test_configmaps import audit, entries, eventually, fake, settings  # noqa: F401


class Stage:
    """The configmaps stage with its two loops running, as the tailer runs it (without the runtime)."""

    def __init__(self, stage: ConfigMapStage) -> None:
        assert stage.projection is not None
        self.stage, self.writer, self.projection = stage, stage.writer, stage.projection
        self.tasks = [asyncio.create_task(self.writer.run()), asyncio.create_task(self.projection.run())]

    async def stop(self) -> None:
        self.tasks[1].cancel()
        await self.stage.stop(Deadline(5.0))
        await asyncio.wait(self.tasks)

    def metric(self, name: str, **labels: str) -> float:
        return self.writer.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def open_stage(fake: FakeKube, store: Store, **kw: Any) -> Stage:  # noqa: F811
    kube = await AsyncKube.connect(str(fake.kubeconfig))
    metrics = TailerMetrics()
    writer = ConfigMapWriter(kube, settings(**kw), metrics, retry_initial=0.01)
    projection = Projection(store, writer, 0.02, metrics)
    await projection.start()
    return Stage(ConfigMapStage(writer, projection, metrics))


async def test_the_cursor_round_trips(store_target: str) -> None:
    store = await Store.open(store_target)
    try:
        assert await store.load_cursor(CURSOR) == 0
        await store.save_cursor(CURSOR, 41)
        await store.save_cursor(CURSOR, 42)
        await store.save_cursor("other", 7)
        assert await store.load_cursor(CURSOR) == 42 and await store.load_cursor("other") == 7
    finally:
        await store.close()
    again = await Store.open(store_target)
    try:
        assert await again.load_cursor(CURSOR) == 42
    finally:
        await again.close()


async def test_follows_the_store_and_saves_a_durable_cursor(fake: FakeKube, store_target: str) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    store = await Store.open(store_target)
    try:
        events = [audit("patch", body={"spec": {"replicas": i}}) for i in range(20)]
        await store.insert([audit("get"), *events[:10]])  # a get makes no entry but moves the cursor
        stage = await open_stage(fake, store)
        await eventually(lambda: len(entries(fake)) == 10, what="first 10 entries")
        await store.insert(events[10:])
        stage.projection.notify()
        await eventually(lambda: len(entries(fake)) == 20, what="20 entries")
        await stage.stop()
        head = await store.head()
        assert await store.load_cursor(CURSOR) == head
        assert [e["auditID"] for e in entries(fake)] == [e["auditID"] for e in events]
        writes = fake.writes("configmaps")

        stage = await open_stage(fake, store)  # a restart reads nothing again
        assert stage.projection.read == head
        await stage.stop()
        assert fake.writes("configmaps") == writes
    finally:
        await store.close()


async def test_entries_not_written_before_a_stop_are_read_again(fake: FakeKube, store_target: str) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    store = await Store.open(store_target)
    try:
        events = [audit("patch", body={"spec": {"replicas": i}}) for i in range(5)]
        await store.insert(events)
        fake.unavailable = True
        stage = await open_stage(fake, store)
        await eventually(lambda: stage.metric("tailer_configmap_writes_total", result="unavailable"),
                         what="a failed write")
        await stage.stop()
        assert await store.load_cursor(CURSOR) == 0  # nothing written: the cursor did not move
        fake.unavailable = False
        stage = await open_stage(fake, store)
        await eventually(lambda: len(entries(fake)) == 5, what="the entries after the restart")
        await stage.stop()
        assert await store.load_cursor(CURSOR) == await store.head()
    finally:
        await store.close()


async def test_a_full_backlog_waits_instead_of_dropping(fake: FakeKube, store_target: str) -> None:  # noqa: F811
    for name in ("a", "b", "c", "d"):
        fake.create("example.com", "v1", "databases", "shop", name)
    store = await Store.open(store_target)
    try:
        events = [audit("patch", name, body={"spec": {"replicas": i}}) for i in range(10) for name in "abcd"]
        await store.insert(events)
        stage = await open_stage(fake, store, max_pending=3)
        for name in "abcd":
            await eventually(lambda name=name: len(entries(fake, f"audit-databases-{name}")) == 10, what=name)
        await stage.stop()
        assert stage.metric("tailer_configmap_dropped_entries_total", reason="backlog_full") == 0
    finally:
        await store.close()


def test_a_killed_tailer_loses_no_configmap_entry(start_tailer, fake: FakeKube, tmp_path: Path) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    fake.unavailable = True  # nothing can be written before the kill
    data = str(tmp_path / "kept")
    flags = ("--kubeconfig", str(fake.kubeconfig), "--configmap-flush-interval", "50ms",
             "--configmap-retry-max-wait", "200ms", "--data-dir", data)
    first = start_tailer(*flags)
    events = [audit("patch", body={"spec": {"replicas": i}}) for i in range(12)]
    with Sender("127.0.0.1", first.port) as sender:
        for i in range(0, 12, 4):
            sender.send_chunk(events[i : i + 4])  # acked: stored
    wait_for(lambda: first.metric("tailer_configmap_writes_total", result="unavailable") >= 1, what="a failed write")
    first.kill()
    fake.unavailable = False
    second = start_tailer(*flags)
    wait_for(lambda: len(entries(fake)) == 12, what="every acked entry after the restart")
    assert [e["auditID"] for e in entries(fake)] == [e["auditID"] for e in events]
    wait_for(lambda: second.metric("tailer_configmap_cursor") >= 12, what="the cursor saved")


def database(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Database",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-orders"}, "spec": {"replicas": replicas}}


async def test_summaries_come_from_the_stored_history_after_a_restart(fake: FakeKube,  # noqa: F811
                                                                        store_target: str) -> None:
    fake.create("example.com", "v1", "databases", "shop", "orders")
    store = await Store.open(store_target)
    try:
        events = [audit("create", body=database(0), response=database(0), code=201),
                  *[audit("patch", body={"spec": {"replicas": i}}) for i in range(1, 6)],
                  audit("patch", body={"spec": {"replicas": 99}}, code=422),  # failed: changes nothing
                  audit("patch", body={"spec": {"replicas": 6}})]
        await store.insert(events)
        rows = await store.events(EventFilter(), limit=100)
        await store.save_cursor(CURSOR, rows[3][0])  # as if a tailer had written the first four and died
        stage = await open_stage(fake, store)
        await eventually(lambda: len(entries(fake)) == 4, what="the rest of the entries")
        await stage.stop()
    finally:
        await store.close()
    assert [e["change"] for e in entries(fake)] == [
        "spec.replicas: 3 -> 4", "spec.replicas: 4 -> 5", "failed (422)", "spec.replicas: 5 -> 6"]


def test_two_replicas_on_one_store_say_the_same_thing(start_tailer, fake: FakeKube, postgres: Any) -> None:  # noqa: F811
    fake.create("example.com", "v1", "databases", "shop", "orders")
    store = ("--store", postgres.new_database(), "--kubeconfig", str(fake.kubeconfig),
             "--configmap-flush-interval", "50ms", "--configmap-retry-max-wait", "200ms")
    a, b = start_tailer(*store), start_tailer(*store)
    events = [audit("create", body=database(0), response=database(0), code=201),
              *[audit("patch", body={"spec": {"replicas": i}}) for i in range(1, 41)]]
    with Sender("127.0.0.1", a.port) as to_a, Sender("127.0.0.1", b.port) as to_b:
        for i, event in enumerate(events):
            (to_a if i % 2 else to_b).send_chunk([event])  # each replica receives every other event
    wait_for(lambda: len(entries(fake)) == len(events), what="every entry")
    assert [e["change"] for e in entries(fake)] == ["created", *[f"spec.replicas: {i - 1} -> {i}" for i in range(1, 41)]]
