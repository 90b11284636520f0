"""The ConfigMap writer's schedule (tailer/configmaps/writer.py) against an in-memory API, on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tailer.configmaps.writer as writer_module
from kube_audit.errors import NotFound
from tailer.configmaps.writer import MAX_CONCURRENT_WRITES, ConfigMapWriter
from tailer.metrics import TailerMetrics
from tailer.settings import ConfigMapSettings


class MemoryKube:
    """ConfigMaps in a dict; counts the writes in flight at once."""

    def __init__(self) -> None:
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.in_flight = self.most_in_flight = 0
        self.writes: list[str] = []

    async def _busy(self) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # a real API answers later: let other writes start meanwhile
        self.in_flight -= 1

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        await self._busy()
        if (namespace, name) not in self.configmaps:
            raise NotFound("no", 404)
        return dict(self.configmaps[(namespace, name)])

    async def create_configmap(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._busy()
        self.configmaps[(namespace, body["metadata"]["name"])] = body
        self.writes.append(body["metadata"]["name"])
        return body

    async def replace_configmap(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._busy()
        self.configmaps[(namespace, name)] = body
        self.writes.append(name)
        return body

    async def merge_patch(self, *_: Any) -> dict[str, Any]:
        return {}


def event(name: str, i: int) -> dict[str, Any]:
    obj = {"apiVersion": "example.com/v1", "kind": "Database",
           "metadata": {"name": name, "namespace": "shop", "uid": f"u-{name}"}, "spec": {"replicas": i}}
    return {"auditID": f"{name}-{i}", "stage": "ResponseComplete", "verb": "patch",
            "user": {"username": "bob"}, "responseStatus": {"code": 200}, "requestObject": {"spec": {"replicas": i}},
            "responseObject": obj, "stageTimestamp": f"2026-11-20T09:00:{i:02d}Z",
            "objectRef": {"resource": "databases", "apiGroup": "example.com", "apiVersion": "v1",
                          "namespace": "shop", "name": name}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def until(condition: Any, what: str) -> None:
    for _ in range(100_000):  # loop turns, not time
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def test_every_due_object_is_written_at_once_with_the_writes_kept_in_flight(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(writer_module, "time", clock, raising=False)
    kube = MemoryKube()
    writer = ConfigMapWriter(kube, ConfigMapSettings(flush_interval=100.0), TailerMetrics())
    task = asyncio.create_task(writer.run())
    try:
        writer.offer([event(f"db{i}", 1) for i in range(40)])
        await until(lambda: True, "a few turns")
        assert kube.writes == []  # due one flush interval after the first entry
        clock.now += 100.0  # the interval has passed for all 40 (no real waiting: the old tick waited 100 s)
        writer.offer([event("late", 1)])  # a new object wakes the writer; it is due 100 s from now
        await until(lambda: len(kube.writes) == 40, "all 40 due objects written")
        assert kube.most_in_flight == MAX_CONCURRENT_WRITES
        assert "audit-databases-late" not in kube.writes
        writer.offer([event("db0", 2)])  # db0 was just written: its next write waits one interval
        await until(lambda: True, "a few turns")
        clock.now += 99.0
        writer.offer([event("other", 1)])  # wakes the writer: nothing is due yet
        for _ in range(100):
            await asyncio.sleep(0)
        assert kube.writes.count("audit-databases-db0") == 1
        clock.now += 2.0
        writer.offer([event("other2", 1)])
        await until(lambda: kube.writes.count("audit-databases-db0") == 2 and "audit-databases-late" in kube.writes,
                    "db0 and late written once their interval passed")
    finally:
        await writer.stop(5.0)
        await task
