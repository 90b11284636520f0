"""The audit API in process (an aiohttp test server over a real store) for the integration tests:
``from tests.helpers.apitest import api_fixture, resource_tracker`` makes the ``api`` fixture available."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from kube_audit.model.source import SourceId
from kube_audit.runtime.http import build_app
from tailer.api.authz import StaticTokens
from tailer.api.routes import AuditApi, WatchHub
from tailer.metrics import TailerMetrics
from tailer.store import Store
from tests.conftest import DATA

SCENARIO = [orjson.loads(line) for line in (DATA / "scenario-deployment.log").read_bytes().splitlines()]
ADMIN = {"Authorization": "Bearer admin-token"}
SHOP = {"Authorization": "Bearer shop-token"}


class Api:
    def __init__(self, client: TestClient, store: Store, hub: WatchHub, api: AuditApi, tokens: Path) -> None:
        self.client, self.store, self.hub, self.api = client, store, hub, api
        self.tokens = tokens  # the token file: edit it to change who may read

    async def get(self, path: str, headers: dict[str, str] = ADMIN, expect: int = 200, **params: Any) -> Any:
        resp = await self.client.get(path, headers=headers, params=params)
        body = await resp.json()
        assert resp.status == expect, str(body)[:2000]
        return body

    async def insert(self, events: list[dict[str, Any]], source: SourceId | None = None) -> None:
        await self.store.insert(events, source)
        self.hub.notify()


class GatedResponse:
    """A watch client whose writes wait until the test opens the gate."""

    def __init__(self) -> None:
        self.gate, self.writing = asyncio.Event(), asyncio.Event()
        self.lines: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self.writing.set()
        await self.gate.wait()
        self.lines += [orjson.loads(line) for line in data.splitlines()]

    async def write_eof(self) -> None:
        pass


@pytest.fixture(scope="session", autouse=True)
def resource_tracker() -> None:
    """The query pool's worker processes come with multiprocessing's resource tracker, one per process
    for its whole life (as in the tailer): start it before the per-test check for leftover children."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture(name="api")
async def api_fixture(store_target: str, tmp_path: Path) -> AsyncIterator[Api]:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("# token,user,namespaces\nadmin-token,admin,*\nshop-token,shopper,shop,staging\n")
    store = await Store.open(store_target)
    hub, metrics = WatchHub(), TailerMetrics()
    app = build_app(metrics.registry)
    audit = AuditApi(store, StaticTokens(str(tokens)), hub, metrics, poll=0.05, write_timeout=5.0)
    audit.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Api(client, store, hub, audit, tokens)
    finally:
        await client.close()
        audit.close()
        await store.close()
