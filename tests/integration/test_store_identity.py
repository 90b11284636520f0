"""Each stored event keeps the source and cluster it came from (issue 12), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kube_audit.model.source import SourceId
from tailer.store import EventFilter, Store, schema
from tests.integration.test_store import ev
from tests.integration.test_store_schema import _columns, raw, versioned_database

EU, US = SourceId("eu", "apiserver-0"), SourceId("us", "apiserver-0")  # same source name, two clusters


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    s = await Store.open(store_target)
    yield s
    await s.close()


def obj(n: int, verb: str, replicas: int) -> dict[str, Any]:
    body = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": replicas}}
    return ev(n, verb=verb, resource="deployments", group="apps", namespace="shop", name="web",
              extra={"responseObject": body, "auditID": f"id-{n}"})


async def test_events_keep_their_source_and_filter_by_it(store: Store) -> None:
    await store.insert([ev(1), ev(2)], EU)
    await store.insert([ev(3)], US)
    await store.insert([ev(4)], SourceId("us", "apiserver-1"))
    await store.insert([ev(1)], US)  # a copy of an event already stored keeps its first source
    rows = await store.sourced_events(EventFilter(), 0, 10)
    assert [(s, src) for s, _, src in rows] == [(1, EU), (2, EU), (3, US), (4, SourceId("us", "apiserver-1"))]

    async def seqs(**kw: Any) -> list[int]:
        return [s for s, _ in await store.events(EventFilter(**kw), 0, 10)]

    assert await seqs(cluster="eu") == [1, 2]
    assert await seqs(cluster="us") == [3, 4]
    assert await seqs(source="apiserver-0") == [1, 2, 3]
    assert await seqs(cluster="us", source="apiserver-1") == [4]
    assert await seqs(cluster="eu", source="apiserver-1") == []
    assert await seqs(cluster="nowhere") == [] and await seqs(cluster="") == []
    assert await seqs(cluster="eu", user="alice", since=0.0) == [1, 2]


async def test_a_chunk_without_a_source_is_unnamed(store: Store) -> None:
    await store.insert([ev(1)])
    [(_, _, src)] = await store.sourced_events(EventFilter(), 0, 10)
    assert src == SourceId("", "")
    assert [s for s, _ in await store.events(EventFilter(cluster="", source=""), 0, 10)] == [1]


async def test_two_clusters_never_mix_in_one_object_history(store: Store) -> None:
    await store.insert([obj(1, "create", 1), obj(2, "patch", 2)], EU)
    await store.insert([obj(3, "create", 7)], US)
    assert await store.object_clusters("apps", "deployments", "shop", "web") == ["eu", "us"]
    assert await store.object_clusters("apps", "deployments", "shop", "web", source="nope") == []
    eu, _ = await store.object_history("apps", "deployments", "shop", "web", cluster="eu")
    us, _ = await store.object_history("apps", "deployments", "shop", "web", cluster="us")
    assert [s for s, _, _ in eu] == [1, 2] and [s for s, _, _ in us] == [3]
    _, omitted = await store.object_history("apps", "deployments", "shop", "web", limit=1, cluster="eu")
    assert omitted == 1  # the count of older versions is one cluster's too
    assert (await store.object_history("apps", "deployments", "shop", "web", cluster="ap"))[0] == []


async def test_one_cluster_is_answered_without_reading_the_object(store: Store) -> None:
    await store.insert([obj(1, "create", 1)], EU)
    await store.insert([obj(2, "patch", 2)], SourceId("eu", "apiserver-1"))
    assert await store.object_clusters("apps", "deployments", "shop", "web") == ["eu"]
    assert await store.object_clusters("apps", "deployments", "shop", "other") == ["eu"]  # then 404s


def v3_database(target: str, events: list[dict[str, Any]]) -> None:
    """A database as a version 3 tailer left it: no origins."""
    versioned_database(target, events, 3)


def _filenode(sql: Any, target: str) -> Any:
    """Where the table's rows are (PostgreSQL: a rewrite gives it a new file; SQLite: its root page)."""
    if target.startswith("postgresql"):
        return sql("SELECT pg_relation_filenode('audit_events')").fetchone()[0]
    return sql("SELECT rootpage FROM sqlite_master WHERE name = 'audit_events'").fetchone()[0]


async def test_a_version_3_store_gets_origins_in_place_and_keeps_its_rows(store_target: str) -> None:
    events = [obj(1, "create", 1), obj(2, "patch", 2)]
    v3_database(store_target, events)
    with raw(store_target) as sql:
        before = _filenode(sql, store_target)
    store = await Store.open(store_target)
    try:
        with raw(store_target) as sql:
            assert "origin" in _columns(sql, store_target)
            assert _filenode(sql, store_target) == before  # added in place, not rebuilt
            assert sql("SELECT version FROM schema_version ORDER BY version DESC").fetchone()[0] == schema.VERSION
        rows = await store.sourced_events(EventFilter(), 0, 10)
        assert [(e, src) for _, e, src in rows] == [(e, SourceId("", "")) for e in events]
        await store.insert([obj(3, "patch", 3)], SourceId("", "apiserver-0"))  # an upgraded forwarder, no cluster
        assert await store.object_clusters("apps", "deployments", "shop", "web") == [""]
        history, _ = await store.object_history("apps", "deployments", "shop", "web", cluster="")
        assert [s for s, _, _ in history] == [1, 2, 3]  # the old rows and the new are one cluster's history
        await store.insert([obj(4, "patch", 4)], EU)
        assert await store.object_clusters("apps", "deployments", "shop", "web") == ["", "eu"]
        assert [s for s, _ in await store.events(EventFilter(source=""), 0, 10)] == [1, 2]
    finally:
        await store.close()
    again = await Store.open(store_target)  # a fresh process names the sources from the table
    try:
        assert [src for _, _, src in await again.sourced_events(EventFilter(), 2, 10)] == \
            [SourceId("", "apiserver-0"), EU]
    finally:
        await again.close()
