"""The forwarder says what is wrong, once per state change: our ForwardClient against a real listener (or an
HTTP server) on loopback sockets, in this process, misconfigured the ways users misconfigure it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

import fluent_forward as ff
from forwarder.batcher import Chunk
from forwarder.client import ForwardClient
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ClientSettings
from forwarder.transport import Route
from kube_audit.runtime.tls import TLSFiles
from tailer.ingest.listener import ForwardServer
from tailer.ingest.pipeline import Pipeline
from tailer.metrics import TailerMetrics
from tailer.settings import ForwardSettings
from tests.helpers.inprocess import RecordingSink


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((event, kw))


async def tailer(tls: TLSFiles | None = None, shared_key: str | None = None) -> ForwardServer:
    metrics = TailerMetrics()
    server = ForwardServer(ForwardSettings(host="127.0.0.1", port=0, tls=tls, verify_client=tls is not None,
                                           shared_key=shared_key), Pipeline([RecordingSink()], metrics), metrics)
    await server.start()
    return server


async def failures(port: int, attempts: int = 4, **settings: Any) -> list[dict[str, Any]]:
    """Run a client until it failed ``attempts`` times; its tailer_unavailable lines."""
    s = ClientSettings(route=Route("127.0.0.1", port, tls_server_name="localhost", timeout=2.0), hostname="fwd-0",
                       backoff_initial=0.01, backoff_max=0.02, ack_timeout=5.0, **settings)
    log = Log()
    metrics = ForwarderMetrics()
    client = ForwardClient(s, metrics, log, lambda chunk: None)
    stop = asyncio.Event()
    runner = asyncio.create_task(client.run(stop))
    message = ff.encode_packed_forward("audit", ff.encode_entry(1, {"a": 1}), chunk="c1")
    await client.submit(Chunk("c1", message, 1, None, 0))
    async with asyncio.timeout(60):
        while (metrics.registry.get_sample_value("forwarder_reconnects_total") or 0) < attempts:
            await asyncio.sleep(0.01)  # polling a counter, not synchronisation
    stop.set()
    await asyncio.wait_for(runner, 10)
    assert not [kw for event, kw in log.lines if event == "connected"]  # it never was
    return [kw for event, kw in log.lines if event == "tailer_unavailable"]


@pytest.fixture
def tls(pki) -> dict[str, TLSFiles]:
    return {
        "server": TLSFiles(ca=str(pki.ca), cert=str(pki.server.cert), key=str(pki.server.key)),
        "client": TLSFiles(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key)),
        "stranger": TLSFiles(ca=str(pki.ca), cert=str(pki.other_client.cert), key=str(pki.other_client.key)),
        "no_cert": TLSFiles(ca=str(pki.ca)),
    }


async def test_tls_to_a_plaintext_tailer(tls) -> None:
    server = await tailer()
    [line] = await failures(server.port, tls=tls["client"])
    assert "does not speak TLS on this port" in line["error"] and line["step"] == "tailer_tls"
    await server.stop(1)


async def test_plaintext_to_a_tls_tailer(tls) -> None:
    server = await tailer(tls["server"])
    [line] = await failures(server.port)
    assert "closed the connection without answering" in line["error"] and "set --tls-ca" in line["error"]
    await server.stop(1)


async def test_plaintext_to_a_tls_tailer_with_a_shared_key(tls) -> None:
    server = await tailer(tls["server"], shared_key="k")
    [line] = await failures(server.port, attempts=2, shared_key="k")
    assert "no HELO" in line["error"] and "set --tls-ca" in line["error"] and line["step"] == "handshake"
    await server.stop(1)


@pytest.mark.parametrize(("client", "words"), [("stranger", "refused our client certificate"),
                                                ("no_cert", "wants a client certificate and we sent none")])
async def test_a_refused_client_certificate(tls, client: str, words: str) -> None:
    server = await tailer(tls["server"])
    [line] = await failures(server.port, tls=tls[client])
    assert words in line["error"] and line["step"] == "tailer_tls"
    await server.stop(1)


async def test_pointing_at_the_http_port() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        [line] = await failures(port)
    finally:
        await runner.cleanup()
    assert "speaks HTTP, not the forward protocol" in line["error"] and "forward port" in line["error"]
