"""The forward-protocol listener: TLS and handshake per connection, ack when the sinks are durable.

A connection is pipelined: while chunk N is in the sinks (the store commits on its own thread), the
loop reads and decodes chunk N+1 and starts its delivery, up to ``PIPELINE_DEPTH`` chunks in flight.
Deliveries start in arrival order and each acks only after the one before it has finished, so acks go
out in order. The first delivery that fails closes the connection: what came after it is not acked
either, and the sender resends from there (the store is idempotent).

No step of a connection holds the loop for a whole chunk: a chunk's entries are decoded ``DECODE_STEP`` at
a time (fluent_forward's ``step_entries``), yielding to the loop between steps, and the pipeline parses
them in steps too (``Pipeline.prepare``, here in the reading loop, so chunks reach the sinks in arrival
order); an API request or another connection waits for one step (milliseconds), not for the decode and
parse of every chunk in flight (tens to hundreds of milliseconds each on a loaded machine).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

from fluent_forward import (
    NEED_DATA,
    Authenticated,
    AuthRefused,
    EventBatch,
    PeerClosed,
    ProtocolError,
    Records,
    ServerSession,
    State,
)
from kube_audit.runtime.observability import get_logger
from kube_audit.runtime.tls import ReloadingContext, server_context
from tailer.ingest.admission import Admission
from tailer.ingest.pipeline import Item, Pipeline
from tailer.metrics import TailerMetrics
from tailer.settings import ForwardSettings

READ_SIZE = 256 * 1024
PIPELINE_DEPTH = 2  # chunks of one connection in the sinks at once: decode overlaps the commit
DECODE_STEP = 100  # entries decoded between two yields to the loop (~2 ms of CPU)
log = get_logger(component="forward_server")
class _NotAcked(Exception):
    """The pipeline refused a batch: close without an ack, the sender resends."""


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
        self.admission = Admission(settings.max_connections, settings.max_buffered_bytes, metrics)

    async def start(self) -> None:
        self.admission.raise_file_limit()
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
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        if self._closing or not self.admission.admit(peer):
            writer.close()  # (refusals are counted and logged by Admission, once per burst)
            return
        self._handlers.add(task)
        self.metrics.connections.inc()
        self.metrics.open_connections.inc()
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        finally:
            self.admission.release()
            self.metrics.open_connections.dec()
            self._handlers.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (TimeoutError, OSError, ssl.SSLError, asyncio.CancelledError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        s = self.settings
        session = ServerSession(s.hostname, s.shared_key, s.users, max_message_bytes=s.max_message_bytes,
                                max_entries=s.max_entries, pre_auth_bytes=s.pre_auth_bytes,
                                step_entries=DECODE_STEP)
        held = 0  # this connection's share of the admission budget
        inflight: deque[asyncio.Task[None]] = deque()  # this connection's deliveries, oldest first
        hostname = ""  # what the peer called itself in its PING (shared-key auth): a source's fallback name
        try:
            if self.tls is not None and not await self._start_tls(writer, peer):
                return
            deadline = asyncio.get_running_loop().time() + s.handshake_timeout
            writer.write(session.data_to_send())  # the HELO, with a shared key
            while True:
                event = session.next_event()
                if event is NEED_DATA:
                    writer.write(session.data_to_send())
                    await writer.drain()
                    held = self._hold(held, session.buffered())
                    data = await self._read(reader, session, deadline, peer)
                    if data is None:
                        return
                    session.receive_data(data)
                    held = self._hold(held, session.buffered())
                elif isinstance(event, EventBatch):
                    while session.decode_more():  # the rest of the chunk, a step at a time
                        await asyncio.sleep(0)
                    while inflight and (inflight[0].done() or len(inflight) >= PIPELINE_DEPTH):
                        await inflight.popleft()  # raises _NotAcked: close, the rest is not acked
                    records = event.records(hostname)  # a list of records, with .tag, .times, ... beside them
                    try:  # here, in arrival order: a delivery hands them to the sinks in its first step
                        items = await self.pipeline.prepare(records)
                    except Exception as exc:  # (a bug: the chunk is not acked, the sender resends)
                        raise _NotAcked() from exc
                    after = inflight[-1] if inflight else None
                    inflight.append(asyncio.create_task(self._deliver(event, records, items, session, writer, after)))
                elif isinstance(event, Authenticated):
                    writer.write(session.data_to_send())  # the PONG
                    hostname = event.peer
                    log.debug("connection_open", peer=peer, client=event.peer)
                elif isinstance(event, AuthRefused):
                    writer.write(session.data_to_send())  # the PONG saying why, then close
                    await writer.drain()
                    self.metrics.auth_failures.labels(event.reason).inc()
                    log.warning("handshake_failed", peer=peer, reason=event.detail, client=event.peer or None)
                    return
                elif isinstance(event, PeerClosed):
                    while inflight:  # a sender that closes after its last chunk still gets the acks it can read
                        await inflight.popleft()
                    if session.state is State.AWAIT_PING:
                        self._refuse_handshake(peer, "no_ping", "connection closed before PING")
                    elif event.truncated:
                        log.info("connection_lost", peer=peer, error="closed in the middle of a message")
                    return
        except ProtocolError as exc:
            self.metrics.bad_frames.labels(exc.reason).inc()
            log.warning("bad_frame", peer=peer, reason=exc.reason, error=str(exc))
        except _NotAcked as exc:  # a sink refused the chunk (counted in Pipeline.deliver): no ack, and
            # closing makes the forwarder resend it (was an unlogged "Unhandled exception" traceback)
            cause = exc.__cause__
            log.error("chunk_not_acked", peer=peer, error=str(cause) or type(cause).__name__)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("connection_lost", peer=peer, error=str(exc) or type(exc).__name__)
        finally:
            self.admission.hold(held, 0)
            await self._settle(inflight, peer)

    @staticmethod
    async def _settle(inflight: deque[asyncio.Task[None]], peer: str) -> None:
        """Let the deliveries still in flight finish (their data is in the sinks or not; nothing is lost
        either way) before the connection closes; a failure among them was logged or is logged here."""
        for task in inflight:
            try:
                await task
            except _NotAcked as exc:
                cause = exc.__cause__
                log.error("chunk_not_acked", peer=peer, error=str(cause) or type(cause).__name__)
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass

    def _hold(self, held: int, now: int) -> int:
        if not self.admission.hold(held, now):
            raise ProtocolError("memory_budget", f"partial messages of all connections exceed "
                                                 f"{self.admission.max_buffered_bytes} bytes; try again later")
        return now

    async def _start_tls(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        assert self.tls is not None
        # start_tls must run in this task's first step, before the loop reads the
        # ClientHello into the plain stream buffer (so no wait_for, which adds a task).
        try:
            async with asyncio.timeout(self.settings.handshake_timeout):
                await writer.start_tls(self.tls.get())
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.metrics.auth_failures.labels("tls").inc()
            log.warning("tls_handshake_failed", peer=peer, reason=str(reason), error=str(exc))
            return False
        return True

    def _refuse_handshake(self, peer: str, reason: str, detail: str) -> None:
        self.metrics.auth_failures.labels(reason).inc()
        log.warning("handshake_failed", peer=peer, reason=detail)

    async def _read(self, reader: asyncio.StreamReader, session: ServerSession, deadline: float,
                    peer: str) -> bytes | None:
        """The next bytes (b"" at EOF), or None when the connection must end now (stopping, no PING in time)."""
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            return None
        self._idle.add(task)
        idle = self.settings.idle_timeout
        try:
            if session.state is not State.AWAIT_PING:
                try:
                    async with asyncio.timeout(idle if idle > 0 else None):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    self.metrics.idle_closed.inc()
                    log.info("connection_idle_closed", peer=peer, idle_timeout=idle)
                    return None
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(session.pre_auth_bytes)  # little before the PING
                except TimeoutError:
                    self._refuse_handshake(peer, "timeout", "no PING in time")
                    return None
        finally:
            self._idle.discard(task)
        if session.state is State.READY:
            self.metrics.bytes.inc(len(data))
        return data

    async def _deliver(self, batch: EventBatch, records: Records, items: list[Item] | None, session: ServerSession,
                       writer: asyncio.StreamWriter, after: asyncio.Task[None] | None = None) -> None:
        """Deliver one chunk, then ack it once the chunk before it (``after``) has finished."""
        try:
            await self.pipeline.deliver(records, items)
        except Exception as exc:  # (an OSError of a sink is not a lost connection)
            writer.close()  # the reading loop stops: nothing after this chunk is acked
            raise _NotAcked() from exc
        if after is not None and not await _succeeded(after):
            return  # the chunk before failed and closes the connection: no acks out of order
        self.metrics.events.inc(len(records))
        self.metrics.chunks.labels(batch.mode).inc()
        if session.state is State.READY and session.ack(batch):  # (not after a later bad frame)
            writer.write(session.data_to_send())
            self.metrics.acks.inc()


async def _succeeded(task: asyncio.Task[None]) -> bool:
    try:
        await asyncio.shield(task)  # (its failure is the reading loop's to report)
    except (_NotAcked, ConnectionError, OSError, asyncio.CancelledError):
        return False
    return True
