"""Fluent forward protocol v1, sans-I/O. Imports only msgpack, zstandard (for zstd payloads) and the standard library."""

from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEARTBEAT,
    Decoder,
    encode_ack,
    encode_entry,
    encode_forward,
    encode_helo,
    encode_message,
    encode_packed,
    encode_packed_forward,
    encode_ping,
    encode_pong,
    gzip_compress,
)
from .entries import DEFAULT_MAX_ENTRIES, gunzip, to_event_time
from .errors import FluentForwardError, HandshakeError, ProtocolError
from .handshake import ClientHandshake, ServerHandshake, digest
from .model import (
    Ack,
    Entry,
    EventBatch,
    EventTime,
    Heartbeat,
    Helo,
    Message,
    Metadata,
    Options,
    Ping,
    Pong,
    Record,
    Records,
)
from .session import (
    NEED_DATA,
    Acked,
    Authenticated,
    AuthRefused,
    ClientSession,
    PeerClosed,
    ServerSession,
    SessionError,
    State,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES", "HEARTBEAT", "Decoder", "encode_ack", "encode_entry", "encode_forward",
    "encode_helo", "encode_message", "encode_packed", "encode_packed_forward", "encode_ping", "encode_pong", "gunzip",
    "gzip_compress", "to_event_time", "FluentForwardError", "HandshakeError",
    "ProtocolError", "ClientHandshake", "ServerHandshake", "digest", "Ack", "Entry", "EventBatch",
    "EventTime", "Heartbeat", "Helo", "Message", "Metadata", "Options", "Ping", "Pong", "Record", "Records",
    "DEFAULT_MAX_ENTRIES",
    "NEED_DATA", "Acked", "Authenticated", "AuthRefused", "ClientSession", "PeerClosed", "ServerSession",
    "SessionError", "State",
]
