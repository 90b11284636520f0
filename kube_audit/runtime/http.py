"""The small aiohttp server both daemons run: /healthz, /readyz, /metrics, plus any routes added."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from .lifecycle import Deadline
from .observability import render_metrics


def build_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool] = lambda: True,
    healthy: Callable[[], bool] = lambda: True,
    extra: Callable[[], Awaitable[bytes]] | None = None,
) -> web.Application:
    """``extra``: more metrics in the text format, asked on each scrape (another process's families)."""
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n" if healthy() else "unhealthy\n", status=200 if healthy() else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.Response(text="ok\n" if ok else "not ready\n", status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = render_metrics(registry) + (await extra() if extra is not None else b"")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    """Owns one aiohttp runner bound to host:port."""

    def __init__(self, app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app, self.host, self.port, self.ssl_context = app, host, port, ssl_context
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        if self.port == 0 and site._server is not None:  # tests ask for a free port
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self, deadline: Deadline | None = None) -> None:
        """Stop listening, let running requests finish until ``deadline``, then cancel them."""
        if self._runner is not None:
            if deadline is not None:
                # aiohttp takes the graceful period when the runner is built; ours is known only now
                self._runner._shutdown_timeout = deadline.left()
            await self._runner.cleanup()
            self._runner = None
