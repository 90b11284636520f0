"""The API port's certificate is reloaded when its Secret changes, for each new connection."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from aiohttp import web

from kube_audit.runtime.http import HttpServer
from kube_audit.runtime.tls import TLSFiles
from tailer.api.authn import api_tls
from tests.helpers.pki import issue, make_ca, secret_dir


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_the_serving_certificate_is_reloaded_on_change(tmp_path: Path) -> None:
    first = make_ca("first-ca", tmp_path / "first-ca.crt")
    second = make_ca("second-ca", tmp_path / "second-ca.crt")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old = issue(first, "server", tmp_path / "a", server=True, names=("127.0.0.1",))
    new = issue(second, "server", tmp_path / "b", server=True, names=("127.0.0.1",))
    secret = tmp_path / "secret"
    secret_dir(secret, "1", {"tls.crt": old.cert, "tls.key": old.key})
    app = web.Application()
    app.router.add_get("/", hello)
    server = HttpServer(app, "127.0.0.1", 0, api_tls(TLSFiles(cert=str(secret / "tls.crt"), key=str(secret / "tls.key")),
                                                     None))
    await server.start()
    try:
        async def get(ca: Path) -> str:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca))) as client:
                return (await client.get(f"https://127.0.0.1:{server.port}/")).text

        assert await get(tmp_path / "first-ca.crt") == "ok"
        secret_dir(secret, "2", {"tls.crt": new.cert, "tls.key": new.key})  # the kubelet swaps ..data
        assert await get(tmp_path / "second-ca.crt") == "ok"
        try:
            await get(tmp_path / "first-ca.crt")
            raise AssertionError("the old certificate is still served")
        except httpx.ConnectError:
            pass
    finally:
        await server.stop()
