"""Fluent forward protocol v1, sans-I/O. Imports only msgpack and the standard library."""

from .codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEARTBEAT,
    Decoder,
    encode_ack,
    encode_entry,
    encode_forward,
    encode_helo,
    encode_message,
    encode_packed_forward,
    encode_ping,
    encode_pong,
    gunzip,
    gzip_compress,
    to_event_time,
    unpack_entries,
)
from .errors import FluentForwardError, HandshakeError, ProtocolError
from .handshake import ClientHandshake, ServerHandshake, digest
from .model import Ack, Entry, EventBatch, EventTime, Heartbeat, Helo, Message, Options, Ping, Pong, Record
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
    "encode_helo", "encode_message", "encode_packed_forward", "encode_ping", "encode_pong", "gunzip",
    "gzip_compress", "to_event_time", "unpack_entries", "FluentForwardError", "HandshakeError",
    "ProtocolError", "ClientHandshake", "ServerHandshake", "digest", "Ack", "Entry", "EventBatch",
    "EventTime", "Heartbeat", "Helo", "Message", "Options", "Ping", "Pong", "Record",
    "NEED_DATA", "Acked", "Authenticated", "AuthRefused", "ClientSession", "PeerClosed", "ServerSession",
    "SessionError", "State",
]
