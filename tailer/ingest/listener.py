"""The forward-protocol listener: TLS and handshake per connection, ack when the sinks are durable."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from fluent_forward import (
    Decoder,
    EventBatch,
    Heartbeat,
    Ping,
    ProtocolError,
    ServerHandshake,
    encode_ack,
)
from kube_audit.runtime.observability import get_logger
from kube_audit.runtime.tls import ReloadingContext, server_context
from tailer.ingest.pipeline import Pipeline
from tailer.metrics import TailerMetrics
from tailer.settings import ForwardSettings

READ_SIZE = 256 * 1024
log = get_logger(component="forward_server")


class ForwardServer:
    def __init__(self, settings: ForwardSettings, pipeline: Pipeline, metrics: TailerMetrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.tls: ReloadingContext | None = None
        if settings.tls is not None:
            self.tls = ReloadingContext(settings.tls, lambda f: server_context(f, settings.verify_client))
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._idle: set[asyncio.Task[Any]] = set()  # waiting for bytes: safe to cancel on stop
        self._closing = False
        self.port = settings.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.settings.host, self.settings.port, limit=READ_SIZE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("forward_listening", host=self.settings.host, port=self.port,
                 tls=self.tls is not None, shared_key=self.settings.shared_key is not None)

    async def stop(self, deadline: float) -> None:
        """Stop accepting, let connections finish the chunk they are in, then close them."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._idle):
            task.cancel()
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
                log.warning("connections_cancelled", count=len(pending))
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._handlers.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        self.metrics.connections.inc()
        self.metrics.open_connections.inc()
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        finally:
            self.metrics.open_connections.dec()
            self._handlers.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (TimeoutError, OSError, ssl.SSLError, asyncio.CancelledError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        s = self.settings
        decoder = Decoder(s.max_message_bytes)
        pending: list[Any] = []
        try:
            if self.tls is not None:
                # start_tls must run in this task's first step, before the loop reads the
                # ClientHello into the plain stream buffer (so no wait_for, which adds a task).
                try:
                    async with asyncio.timeout(s.handshake_timeout):
                        await writer.start_tls(self.tls.get())
                except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
                    reason = getattr(exc, "reason", None) or type(exc).__name__
                    self.metrics.auth_failures.labels("tls").inc()
                    log.warning("tls_handshake_failed", peer=peer, reason=str(reason), error=str(exc))
                    return
            if s.shared_key is not None:
                after_ping = await self._handshake(reader, writer, decoder, peer)
                if after_ping is None:
                    return
                pending = after_ping
            log.debug("connection_open", peer=peer)
            while True:
                for message in pending:
                    await self._handle(message, writer, peer)
                await writer.drain()
                data = await self._read(reader)
                if not data:
                    return
                self.metrics.bytes.inc(len(data))
                pending = decoder.feed(data)
        except ProtocolError as exc:
            self.metrics.bad_frames.labels(exc.reason).inc()
            log.warning("bad_frame", peer=peer, reason=exc.reason, error=str(exc))
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("connection_lost", peer=peer, error=str(exc) or type(exc).__name__)
        except Exception as exc:  # a sink refused the chunk (counted in Pipeline.deliver): no ack, and
            # closing makes the forwarder resend it (was an unlogged "Unhandled exception" traceback)
            log.error("chunk_not_acked", peer=peer, error=str(exc) or type(exc).__name__)

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            return b""
        self._idle.add(task)
        try:
            return await reader.read(READ_SIZE)
        finally:
            self._idle.discard(task)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: Decoder, peer: str
    ) -> list[Any] | None:
        s = self.settings
        assert s.shared_key is not None
        shake = ServerHandshake(s.shared_key, s.hostname, s.users)
        writer.write(shake.helo())
        await writer.drain()
        messages: list[Any] = []
        try:
            async with asyncio.timeout(s.handshake_timeout):
                while not messages:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        self.metrics.auth_failures.labels("no_ping").inc()
                        log.warning("handshake_failed", peer=peer, reason="connection closed before PING")
                        return None
                    messages = decoder.feed(data)
        except TimeoutError:
            self.metrics.auth_failures.labels("timeout").inc()
            log.warning("handshake_failed", peer=peer, reason="no PING in time")
            return None
        ping, rest = messages[0], messages[1:]
        if not isinstance(ping, Ping):
            self.metrics.auth_failures.labels("no_ping").inc()
            log.warning("handshake_failed", peer=peer, reason=f"expected PING, got {type(ping).__name__}")
            return None
        pong, failure = shake.answer(ping)
        writer.write(pong)
        await writer.drain()
        if failure is not None:
            self.metrics.auth_failures.labels("shared_key").inc()
            log.warning("handshake_failed", peer=peer, reason=failure, client=ping.hostname)
            return None
        return rest

    async def _handle(self, message: Any, writer: asyncio.StreamWriter, peer: str) -> None:
        if isinstance(message, EventBatch):
            records = [record for _, record in message.entries]
            await self.pipeline.deliver(records)
            self.metrics.events.inc(len(records))
            self.metrics.chunks.labels(message.mode).inc()
            if message.options.chunk is not None:
                writer.write(encode_ack(message.options.chunk))
                self.metrics.acks.inc()
        elif isinstance(message, Heartbeat):
            return
        else:
            raise ProtocolError("unexpected_message", f"{type(message).__name__} after the handshake")
