"""Client and server sessions of the forward protocol, as state machines in the h11 style.

Bytes in with ``receive_data``, events out with ``next_event``, bytes to write with ``data_to_send``.
Nothing here does I/O or reads a clock: the caller owns the socket and the timeouts.

Server: [AWAIT_PING ->] READY; a refused PING moves to CLOSED (the caller sends what is pending and
closes: Fluent Bit's out_forward would otherwise reuse the refused connection without a handshake).
Client: [AWAIT_HELO -> AWAIT_PONG ->] READY; chunks are sent only when READY and must be acked in
the order they were sent. Any protocol violation moves either side to ERROR, which refuses more data.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .codec import DEFAULT_MAX_MESSAGE_BYTES, Decoder, encode_ack
from .entries import DEFAULT_MAX_ENTRIES
from .errors import FluentForwardError, HandshakeError, ProtocolError
from .handshake import ClientHandshake, ServerHandshake
from .model import Ack, EventBatch, Heartbeat, Helo, Message, Ping, Pong

_T = TypeVar("_T")


class State(enum.Enum):
    AWAIT_HELO = "await_helo"  # client: the server's HELO
    AWAIT_PING = "await_ping"  # server: the client's PING
    AWAIT_PONG = "await_pong"  # client: the server's PONG
    READY = "ready"
    CLOSED = "closed"  # the handshake was refused: send what is pending, then close
    ERROR = "error"  # the peer broke the protocol: close


DEFAULT_PRE_AUTH_BYTES = 16 * 1024  # a PING is a few hundred bytes


class NeedData:
    """``next_event`` has nothing more until ``receive_data`` is called again."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The handshake succeeded; ``peer`` is the other side's hostname."""

    peer: str
    username: str = ""


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """Server side: the client's PING was refused (a PONG saying why is pending); close after sending it."""

    reason: str  # metric word: shared_key, no_ping
    detail: str
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Acked:
    """Client side: the oldest chunk in flight was acked."""

    chunk: str


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed its side (``receive_data(b"")``); ``truncated`` when in the middle of a message."""

    truncated: bool = False


ServerEvent = EventBatch | Heartbeat | Authenticated | AuthRefused | PeerClosed | NeedData
ClientEvent = Authenticated | Acked | PeerClosed | NeedData


class SessionError(FluentForwardError):
    """The local side used the session wrongly (e.g. sent a chunk before the handshake)."""


class _Session:
    def __init__(self, state: State, max_message_bytes: int, max_entries: int = DEFAULT_MAX_ENTRIES,
                 step_entries: int = 0) -> None:
        self.state = state
        self._decoder = Decoder(max_message_bytes, max_entries, step_entries)
        self._out = bytearray()
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means it closed its side."""
        if self.state in (State.ERROR, State.CLOSED):
            raise SessionError(f"the session is {self.state.value}; no more data is accepted")
        if not data:
            self._eof = True
            return
        self._guard(self._decoder.receive, data)

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def decode_more(self) -> bool:
        """With ``step_entries``: decode the next entries of the last EventBatch (codec.Decoder); True
        while some are left. A bad entry moves the session to ERROR, as in ``next_event``."""
        if self.state is State.ERROR:
            return False
        return self._guard(self._decoder.decode_more)

    def buffered(self) -> int:
        """Bytes received that are not yet a whole message (what this session holds in memory)."""
        return self._decoder.buffered()

    def _guard(self, step: Callable[..., _T], *args: Any) -> _T:
        """Run a step of the decoder or handshake; an error moves the session to ERROR."""
        try:
            return step(*args)
        except FluentForwardError:
            self.state = State.ERROR
            raise

    def _next_message(self) -> Message | PeerClosed | NeedData:
        if self.state in (State.ERROR, State.CLOSED):
            return NEED_DATA
        message = self._guard(self._decoder.next_message)
        if message is not None:
            return message
        if self._eof:
            return PeerClosed(truncated=self._decoder.buffered() > 0)  # (the state says where we were)
        return NEED_DATA

    def _fail(self, error: FluentForwardError) -> FluentForwardError:
        self.state = State.ERROR
        return error


class ServerSession(_Session):
    """The receiving side (our tailer, Fluent Bit's in_forward)."""

    def __init__(self, hostname: str = "", shared_key: str | None = None,
                 users: Mapping[str, str] | None = None, *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES,
                 pre_auth_bytes: int = DEFAULT_PRE_AUTH_BYTES, step_entries: int = 0,
                 nonce: bytes | None = None, auth_salt: bytes | None = None) -> None:
        super().__init__(State.READY if shared_key is None else State.AWAIT_PING, max_message_bytes, max_entries,
                         step_entries)
        self.pre_auth_bytes = pre_auth_bytes  # what an unauthenticated peer may make us hold
        self._shake: ServerHandshake | None = None
        if shared_key is not None:
            self._shake = ServerHandshake(shared_key, hostname, users, nonce=nonce, auth_salt=auth_salt)
            self._out += self._shake.helo()

    def next_event(self) -> ServerEvent:
        message = self._next_message()
        if isinstance(message, NeedData) and self.state is State.AWAIT_PING \
                and self._decoder.buffered() > self.pre_auth_bytes:
            raise self._fail(ProtocolError("pre_auth_limit", f"more than {self.pre_auth_bytes} bytes before the PING"))
        if isinstance(message, (NeedData, PeerClosed)):
            return message
        if self.state is State.AWAIT_PING:
            return self._on_ping(message)
        if isinstance(message, (EventBatch, Heartbeat)):
            return message
        raise self._fail(ProtocolError("unexpected_message", f"{type(message).__name__} after the handshake"))

    def _on_ping(self, message: Message) -> Authenticated | AuthRefused:
        assert self._shake is not None
        if not isinstance(message, Ping):
            self.state = State.CLOSED
            return AuthRefused("no_ping", f"expected PING, got {type(message).__name__}")
        pong, failure = self._shake.answer(message)
        self._out += pong
        if failure is not None:
            self.state = State.CLOSED
            return AuthRefused("shared_key", failure, message.hostname)
        self.state = State.READY
        return Authenticated(message.hostname, message.username)

    def ack(self, batch: EventBatch) -> bool:
        """Queue the ack of a delivered batch (when it asked for one); True if queued."""
        if self.state is not State.READY:
            raise SessionError(f"cannot ack in state {self.state.value}")
        if batch.options.chunk is None:
            return False
        self._out += encode_ack(batch.options.chunk)
        return True


class ClientSession(_Session):
    """The sending side (our forwarder, Fluent Bit's out_forward)."""

    def __init__(self, hostname: str = "", shared_key: str | None = None, username: str = "",
                 password: str = "", *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 salt: bytes | None = None) -> None:
        super().__init__(State.READY if shared_key is None else State.AWAIT_HELO, max_message_bytes)
        self._shake: ClientHandshake | None = None
        if shared_key is not None:
            self._shake = ClientHandshake(shared_key, hostname, username, password, salt=salt)
        self.in_flight: deque[str] = deque()  # chunk ids sent and not acked, oldest first
        self._head = b""  # the first bytes from the server, to recognise an HTTP server

    def receive_data(self, data: bytes) -> None:
        if len(self._head) < 5:
            self._head += data[: 5 - len(self._head)]
        super().receive_data(data)

    def send_chunk(self, chunk_id: str | None, message: bytes) -> None:
        """Queue an encoded event message; ``chunk_id`` (its ``chunk`` option) when it expects an ack."""
        if self.state is not State.READY:
            raise SessionError(f"cannot send a chunk in state {self.state.value}")
        self._out += message
        if chunk_id is not None:
            self.in_flight.append(chunk_id)

    def next_event(self) -> ClientEvent:
        try:
            message = self._next_message()
        except ProtocolError as exc:
            if self._head and b"HTTP/".startswith(self._head[:5]):
                raise ProtocolError("http", "this port speaks HTTP, not the forward protocol") from exc
            raise
        if isinstance(message, (NeedData, PeerClosed)):
            return message
        if self.state is State.AWAIT_HELO:
            if not isinstance(message, Helo):
                raise self._fail(HandshakeError(f"expected HELO from the server, got {type(message).__name__}"))
            assert self._shake is not None
            self._out += self._shake.ping(message)
            self.state = State.AWAIT_PONG
            return self.next_event()
        if self.state is State.AWAIT_PONG:
            if not isinstance(message, Pong):
                raise self._fail(HandshakeError(f"expected PONG from the server, got {type(message).__name__}"))
            assert self._shake is not None
            self._guard(self._shake.check, message)
            self.state = State.READY
            return Authenticated(message.hostname)
        if isinstance(message, Ack):
            if not self.in_flight or self.in_flight[0] != message.chunk:
                raise self._fail(ProtocolError("unexpected_ack", f"ack for unexpected chunk {message.chunk}"))
            return Acked(self.in_flight.popleft())
        if isinstance(message, Helo):
            raise self._fail(HandshakeError("the server asks for a shared key; set --shared-key"))
        if isinstance(message, Heartbeat):
            return self.next_event()
        raise self._fail(ProtocolError("unexpected_message", f"{type(message).__name__} from the server"))
