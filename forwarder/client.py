"""The forward session: handshake, a window of unacked chunks, acks in order, reconnects.

Every failure (connect, proxy, TLS, handshake, write, ack timeout, wrong ack) closes the connection;
tenacity retries with capped, jittered exponential backoff, and on the new connection every unacked
chunk is resent byte for byte (same chunk id). Acks are handed to ``on_ack`` strictly in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from fluent_forward import (
    NEED_DATA,
    Acked,
    ClientSession,
    FluentForwardError,
    HandshakeError,
    PeerClosed,
    ProtocolError,
    State,
)
from kube_audit.runtime.tls import ReloadingContext, client_context

from .batcher import Chunk
from .errors import AckTimeout, TransportError
from .metrics import ForwarderMetrics
from .settings import ClientSettings
from .transport import Route, Streams, describe, open_route

RETRYABLE = (TransportError, AckTimeout, FluentForwardError, ConnectionError, OSError)


class _IdleClosed(Exception):
    """The tailer closed a connection that had nothing in flight (its idle timeout): not a failure."""


class ForwardClient:
    def __init__(self, settings: ClientSettings, metrics: ForwarderMetrics, log: Any,
                 on_ack: Callable[[Chunk], None],
                 resolve: Callable[[], Awaitable[tuple[str, int]]] | None = None,
                 open_connection: Callable[[Route, ReloadingContext | None, ReloadingContext | None],
                                           Awaitable[Streams]] = open_route) -> None:
        self.s = settings
        self.open_connection = open_connection  # transport.open_route; tests pass an in-memory pipe
        self.resolve = resolve  # looks the tailer's address up again before each connection (kube.py)
        self.route = settings.route  # the route of the current (or last) connection
        self.metrics = metrics
        self.log = log
        self.on_ack = on_ack
        self.pending: deque[Chunk] = deque()  # unacked, in order; the head is acked first
        self._changed = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._failures = 0  # consecutive failures since the last ack: drives the backoff
        self._session = 0  # connection number; a chunk records the one it was last sent on
        self._state = "disconnected"
        self._last_error = ""
        self._heard = False  # the tailer sent something on the current connection
        self._proven = False  # ... and answered a handshake or acked a chunk on it
        self._connected_to: Route | None = None  # the route of the last "connected" line
        self.tailer_tls = ReloadingContext(settings.tls, client_context) if settings.tls else None
        self.proxy_tls = ReloadingContext(settings.proxy_tls, client_context) if settings.proxy_tls else None

    # ---- producer side ----------------------------------------------------------------------

    async def submit(self, chunk: Chunk) -> None:
        """Queue a chunk; waits while the window of unacked chunks is full."""
        while len(self.pending) >= self.s.max_inflight_chunks:
            self._space.clear()
            await self._space.wait()
        self.pending.append(chunk)
        self.metrics.inflight.set(len(self.pending))
        self._settle()
        self._changed.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every submitted chunk is acked; False at the deadline."""
        try:
            async with asyncio.timeout(timeout):
                while self.pending:
                    self._space.clear()
                    await self._space.wait()
        except TimeoutError:
            return False
        return True

    def _settle(self) -> None:
        """Markers (no message) at the head complete as soon as everything before them has."""
        while self.pending and not self.pending[0].message:
            self._complete(self.pending.popleft())

    def _complete(self, chunk: Chunk) -> None:
        try:
            self.on_ack(chunk)
        finally:  # a failing callback must not leave the reader waiting for space forever
            self.metrics.inflight.set(len(self.pending))
            self._space.set()

    # ---- connection side --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep a session up until ``stop``; never returns on errors, only on stop."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=self._backoff,
            sleep=lambda seconds: self._sleep(stop, seconds),
            before_sleep=self._before_sleep,
        )
        async for attempt in retrying:
            with attempt:
                while not stop.is_set():
                    try:
                        await self._connect_and_serve(stop)
                    except _IdleClosed:  # the tailer's --idle-timeout: reconnect when there is work, quietly
                        self.log.debug("tailer_closed_idle_connection")
                        await self._wait_for_work(stop)
        self._set_state("stopped")

    async def _wait_for_work(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and not any(c.message for c in self.pending):
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    def _backoff(self, _: RetryCallState) -> float:
        cap = min(self.s.backoff_max, self.s.backoff_initial * 2 ** min(self._failures - 1, 30))
        return random.uniform(cap / 2, cap)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        message = str(exc) or type(exc).__name__
        self._failures += 1
        self.metrics.reconnects.inc()
        if self._state != "failing" or message != self._last_error:
            self.log.warning("tailer_unavailable", error=message, step=getattr(exc, "step", None),
                             unacked_chunks=len(self.pending))
        self._last_error = message
        self._set_state("failing")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.metrics.connected.set(1 if state == "connected" else 0)

    async def _route(self) -> Route:
        if self.resolve is None:
            return self.s.route
        host, port = await self.resolve()
        return dataclasses.replace(self.s.route, tailer_host=host, tailer_port=port)

    async def _connect_and_serve(self, stop: asyncio.Event) -> None:
        self.route = await self._route()
        reader, writer = await self.open_connection(self.route, self.tailer_tls, self.proxy_tls)
        self._heard = False  # nothing from the tailer yet on this connection
        self._proven = False  # the tailer has not yet answered like a tailer on it
        try:
            session = ClientSession(self.s.hostname, self.s.shared_key, self.s.username, self.s.password)
            if session.state is not State.READY:
                await self._handshake(reader, writer, session)
            if session.state is State.READY and (self.s.shared_key is not None
                                                 or not any(c.message for c in self.pending)):
                self._connected()  # proven by the handshake, or nothing to prove it with yet
            await self._serve(reader, writer, session, stop)
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except (TimeoutError, OSError, asyncio.CancelledError):
                pass

    def _connected(self) -> None:
        """The tailer answered like a tailer (handshake or first ack): one log line per state change."""
        self._proven = True
        if self._state == "connected" and self.route == self._connected_to:
            return
        self._connected_to = self.route
        was = self._state
        self._set_state("connected")
        self.log.info("connected", tailer=f"{self.route.tailer_host}:{self.route.tailer_port}",
                      proxy=self.route.proxy_kind, after_failures=self._failures if was == "failing" else 0,
                      resending=sum(1 for c in self.pending if c.message))

    def _lost(self, exc: BaseException | None, step: str = "receive") -> TransportError:
        """Why the tailer went away, in words a user acts on when the cause is clear."""
        where = describe(self.route)
        if not self._heard and not self._proven and self.tailer_tls is not None \
                and isinstance(exc, (ConnectionResetError, ssl.SSLError)):
            cert = self.tailer_tls.files.cert
            if not cert:
                return TransportError("tailer_tls", f"{where} wants a client certificate and we sent none: "
                                                    "set --tls-cert and --tls-key")
            return TransportError("tailer_tls", f"{where} refused our client certificate {cert}: it must be "
                                                "signed by a CA in the tailer's --tls-ca")
        if not self._heard and not self._proven and exc is None and self.tailer_tls is None:
            return TransportError(step, f"{where} closed the connection without answering our first chunk: "
                                             "if the tailer speaks TLS, set --tls-ca (its log says why it closed)")
        if exc is None:
            return TransportError(step, f"{where} closed")
        return TransportError(step, f"{where} was lost: {exc}")

    def _next_event(self, session: ClientSession, step: str) -> Any:
        """The session's next event; its protocol errors become transport errors of ``step``."""
        try:
            return session.next_event()
        except HandshakeError as exc:
            raise TransportError("handshake", str(exc)) from exc
        except ProtocolError as exc:
            if exc.reason == "http":
                raise TransportError(step, f"{describe(self.route)} speaks HTTP, not the forward protocol: point "
                                           "--tailer at the tailer's forward port (24224), not its HTTP port") from exc
            raise TransportError(step, f"{describe(self.route)} broke the protocol: {exc}") from exc
        except FluentForwardError as exc:
            raise TransportError(step, f"{describe(self.route)} broke the protocol: {exc}") from exc

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         session: ClientSession) -> None:
        what = "HELO"
        try:
            async with asyncio.timeout(self.route.timeout):
                while session.state is not State.READY:
                    what = "HELO" if session.state is State.AWAIT_HELO else "PONG"
                    event = self._next_event(session, "handshake")
                    if (out := session.data_to_send()):
                        writer.write(out)  # the PING, in one write (Fluent Bit reads it in one read)
                        await writer.drain()
                    if isinstance(event, PeerClosed):
                        raise TransportError("handshake", f"tailer closed the connection before {what}")
                    if event is NEED_DATA:
                        data = await reader.read(65536)
                        self._heard = self._heard or bool(data)
                        session.receive_data(data)
        except TimeoutError:
            hint = "it has no --shared-key (then unset ours), or it speaks TLS (then set --tls-ca)" \
                if what == "HELO" and self.tailer_tls is None else "is --shared-key set on both?"
            raise TransportError("handshake", f"no {what} from the tailer within {self.route.timeout:g}s: {hint}") \
                from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: ClientSession,
                     stop: asyncio.Event) -> None:
        sender = asyncio.create_task(self._send_loop(writer, session), name="forward-send")
        acker = asyncio.create_task(self._ack_loop(reader, session), name="forward-ack")
        stopper = asyncio.create_task(stop.wait(), name="forward-stop")
        try:
            done, _ = await asyncio.wait([sender, acker, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, acker, stopper):
                task.cancel()
            await asyncio.gather(sender, acker, stopper, return_exceptions=True)
        for task in (sender, acker):
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _send_loop(self, writer: asyncio.StreamWriter, session: ClientSession) -> None:
        self._session += 1
        number = self._session
        while True:
            self._changed.clear()
            for chunk in list(self.pending):
                if chunk.message and chunk.sent_on != number:
                    session.send_chunk(chunk.chunk_id, chunk.message)
                    writer.write(session.data_to_send())
                    chunk.sent_at = time.monotonic()
                    chunk.sent_on = number
                    self.metrics.chunks_sent.inc()
                    self.metrics.bytes_sent.inc(len(chunk.message))
            try:
                await writer.drain()
            except (ConnectionError, OSError) as exc:
                raise self._lost(exc, "send") from exc
            await self._changed.wait()

    async def _ack_loop(self, reader: asyncio.StreamReader, session: ClientSession) -> None:
        tick = min(1.0, self.s.ack_timeout / 4)
        while True:
            event = self._next_event(session, "receive")
            if isinstance(event, Acked):
                self._acked(event.chunk)
                continue
            if isinstance(event, PeerClosed):
                if not session.in_flight and self._proven:
                    raise _IdleClosed()
                raise self._lost(None)
            self._check_ack_deadline()
            try:
                data = await asyncio.wait_for(reader.read(65536), tick)
            except TimeoutError:
                continue
            except (ConnectionError, OSError) as exc:
                raise self._lost(exc) from exc
            self._heard = self._heard or bool(data)
            session.receive_data(data)

    def _check_ack_deadline(self) -> None:
        head = next((c for c in self.pending if c.message), None)
        if head is not None and head.sent_on == self._session and time.monotonic() - head.sent_at > self.s.ack_timeout:
            raise AckTimeout(f"no ack for chunk {head.chunk_id} within {self.s.ack_timeout}s")

    def _acked(self, chunk_id: str) -> None:
        if not self.pending or self.pending[0].chunk_id != chunk_id:
            raise TransportError("ack", f"ack for unexpected chunk {chunk_id}")
        chunk = self.pending.popleft()
        self._connected()
        self._failures = 0
        self.metrics.chunks_acked.inc()
        if not chunk.status:  # a status record is not an audit event
            self.metrics.events_acked.inc(chunk.events)
        self._complete(chunk)
        self._settle()
