"""Encoders and the incremental decoder of the forward protocol. Bytes in, messages out; no I/O."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from .errors import ProtocolError
from .model import (
    EVENT_TIME_EXT,
    Ack,
    Entry,
    EventBatch,
    EventTime,
    Heartbeat,
    Helo,
    Message,
    Options,
    Ping,
    Pong,
    TimeLike,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HEARTBEAT = b"\xc0"  # msgpack nil


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT:
        try:
            return EventTime.from_bytes(data)
        except ValueError as exc:
            raise ProtocolError("bad_time", str(exc)) from exc
    return msgpack.ExtType(code, data)


def _unpacker(max_bytes: int) -> msgpack.Unpacker:
    # surrogateescape: old clients send packed entries as msgpack "str"; we recover the bytes.
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        ext_hook=_ext_hook,
        max_buffer_size=max_bytes,
    )


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolError(f"bad_{what}", f"expected bytes, got {type(value).__name__}")


def _as_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    raise ProtocolError(f"bad_{what}", f"expected a string, got {type(value).__name__}")


def to_event_time(value: Any) -> EventTime:
    if isinstance(value, EventTime):
        return value
    if isinstance(value, bool):
        raise ProtocolError("bad_time", "boolean is not a time")
    if isinstance(value, int):
        return EventTime(value, 0)
    if isinstance(value, float):
        return EventTime.from_float(value)
    raise ProtocolError("bad_time", f"expected EventTime, int or float, got {type(value).__name__}")


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate one or more concatenated gzip members, refusing output beyond ``limit`` bytes."""
    out: list[bytes] = []
    total = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while data:
                piece = inflater.decompress(data, limit - total + 1)
                total += len(piece)
                if total > limit:
                    raise ProtocolError("message_too_large", f"gzip payload inflates beyond {limit} bytes")
                out.append(piece)
                data = inflater.unconsumed_tail
            if not inflater.eof:
                raise ProtocolError("bad_gzip", "truncated gzip member")
        except zlib.error as exc:
            raise ProtocolError("bad_gzip", str(exc)) from exc
        data = inflater.unused_data
    return b"".join(out)


def _options(value: Any) -> Options:
    if value is None:
        return Options()
    if not isinstance(value, dict):
        raise ProtocolError("bad_options", f"expected a map, got {type(value).__name__}")
    size = value.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ProtocolError("bad_options", "size must be an integer")
    chunk = value.get("chunk")
    compressed = value.get("compressed")
    extra = {k: v for k, v in value.items() if k not in ("size", "chunk", "compressed")}
    return Options(
        size=size,
        chunk=None if chunk is None else _as_str(chunk, "options"),
        compressed=None if compressed is None else _as_str(compressed, "options"),
        extra=extra,
    )


def _entry(item: Any) -> Entry:
    if not isinstance(item, list) or len(item) != 2:
        raise ProtocolError("bad_entry", "an entry is [time, record]")
    record = item[1]
    if not isinstance(record, dict):
        raise ProtocolError("bad_record", f"record must be a map, got {type(record).__name__}")
    return to_event_time(item[0]), record


def unpack_entries(data: bytes, limit: int) -> list[Entry]:
    """Decode the concatenated [time, record] entries of a PackedForward payload."""
    unpacker = _unpacker(max(limit, len(data)))
    unpacker.feed(data)
    try:
        return [_entry(item) for item in unpacker]
    except ProtocolError:
        raise
    except (ValueError, TypeError) as exc:
        raise ProtocolError("malformed_msgpack", f"packed entries: {exc}") from exc


class Decoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get the complete messages back.

    A single message (and a decompressed payload) larger than ``max_message_bytes`` raises
    ``ProtocolError("message_too_large")``; after any ``ProtocolError`` the stream is unusable.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._unpacker = _unpacker(max_message_bytes)
        self._start = 0  # stream offset where the message being decoded began
        self._received = 0  # stream offset of the end of the bytes received

    def receive(self, data: bytes) -> None:
        """Buffer ``data``; take the messages out with ``next_message``."""
        self._received += len(data)
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise ProtocolError(
                "message_too_large", f"a message exceeds {self.max_message_bytes} bytes"
            ) from exc

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive."""
        try:
            obj = self._unpacker.unpack()
        except msgpack.OutOfData:
            return None
        except ProtocolError:
            raise
        except (ValueError, TypeError) as exc:
            raise ProtocolError("malformed_msgpack", str(exc)) from exc
        end = self._unpacker.tell()
        wire_bytes, self._start = end - self._start, end
        return self._classify(obj, wire_bytes)

    def buffered(self) -> int:
        """Bytes received and not yet part of a returned message."""
        return self._received - self._start

    def feed(self, data: bytes) -> list[Message]:
        self.receive(data)
        messages: list[Message] = []
        while (message := self.next_message()) is not None:
            messages.append(message)
        return messages

    def _classify(self, obj: Any, wire_bytes: int) -> Message:
        if obj is None:
            return Heartbeat()
        if isinstance(obj, dict):
            if "ack" in obj:
                return Ack(_as_str(obj["ack"], "ack"))
            raise ProtocolError("unexpected_map", "a top-level map must be an ack response")
        if not isinstance(obj, list) or not obj:
            raise ProtocolError("not_an_array", f"got {type(obj).__name__}")
        head = obj[0]
        if head == "HELO" and len(obj) == 2 and isinstance(obj[1], dict):
            opts = obj[1]
            return Helo(
                nonce=_as_bytes(opts.get("nonce", b""), "helo"),
                auth_salt=_as_bytes(opts.get("auth") or b"", "helo"),
                keepalive=bool(opts.get("keepalive", True)),
            )
        if head == "PING" and len(obj) == 6:
            return Ping(
                hostname=_as_str(obj[1], "ping"),
                shared_key_salt=_as_bytes(obj[2], "ping"),
                shared_key_digest=_as_str(obj[3], "ping"),
                username=_as_str(obj[4] or "", "ping"),
                password_digest=_as_str(obj[5] or "", "ping"),
            )
        if head == "PONG" and len(obj) == 5:
            return Pong(
                auth_ok=bool(obj[1]),
                reason=_as_str(obj[2] or "", "pong"),
                hostname=_as_str(obj[3], "pong"),
                shared_key_digest=_as_str(obj[4], "pong"),
            )
        if not isinstance(head, str):
            raise ProtocolError("bad_tag", f"tag must be a string, got {type(head).__name__}")
        if len(obj) < 2:
            raise ProtocolError("bad_message", "no events after the tag")
        body = obj[1]
        if isinstance(body, list):  # Forward mode
            if len(obj) > 3:
                raise ProtocolError("bad_message", "Forward mode has at most 3 elements")
            options = _options(obj[2] if len(obj) == 3 else None)
            return EventBatch(head, [_entry(e) for e in body], options, "forward", wire_bytes)
        if isinstance(body, (bytes, str)):  # PackedForward / CompressedPackedForward
            if len(obj) > 3:
                raise ProtocolError("bad_message", "PackedForward mode has at most 3 elements")
            options = _options(obj[2] if len(obj) == 3 else None)
            payload = _as_bytes(body, "entries")
            mode = "packed"
            if options.compressed == "gzip":
                payload = gunzip(payload, self.max_message_bytes)
                mode = "compressed"
            elif options.compressed not in (None, "text"):
                raise ProtocolError("bad_options", f"unknown compression {options.compressed!r}")
            return EventBatch(head, unpack_entries(payload, self.max_message_bytes), options, mode, wire_bytes)
        # Message mode: [tag, time, record, option?]
        if len(obj) not in (3, 4):
            raise ProtocolError("bad_message", "Message mode is [tag, time, record, option?]")
        entry = _entry([body, obj[2]])
        options = _options(obj[3] if len(obj) == 4 else None)
        return EventBatch(head, [entry], options, "message", wire_bytes)


# ---------------------------------------------------------------------------------------------
# Encoders (client and server side)


def _time_ext(time: TimeLike) -> Any:
    if isinstance(time, EventTime):
        return msgpack.ExtType(EVENT_TIME_EXT, time.to_bytes())
    return time


def encode_entry(time: TimeLike, record: Mapping[str, Any]) -> bytes:
    """One PackedForward entry; concatenate these to build a chunk incrementally."""
    return msgpack.packb([_time_ext(time), record], use_bin_type=True)


def _option_map(options: Options | None) -> dict[str, Any] | None:
    if options is None:
        return None
    out: dict[str, Any] = dict(options.extra)
    for key in ("size", "chunk", "compressed"):
        value = getattr(options, key)
        if value is not None:
            out[key] = value
    return out or None


def _encode(items: list[Any], options: Options | None) -> bytes:
    opts = _option_map(options)
    if opts is not None:
        items.append(opts)
    return msgpack.packb(items, use_bin_type=True)


def encode_message(tag: str, time: TimeLike, record: Mapping[str, Any], options: Options | None = None) -> bytes:
    return _encode([tag, _time_ext(time), record], options)


def encode_forward(tag: str, entries: Iterable[tuple[TimeLike, Mapping[str, Any]]], options: Options | None = None) -> bytes:
    return _encode([tag, [[_time_ext(t), r] for t, r in entries]], options)


def encode_packed_forward(
    tag: str,
    packed_entries: bytes,
    *,
    chunk: str | None = None,
    size: int | None = None,
    compress: bool = False,
    compress_level: int = 6,
) -> bytes:
    """PackedForward (or CompressedPackedForward when ``compress``) from concatenated entries."""
    payload = gzip_compress(packed_entries, compress_level) if compress else packed_entries
    options = Options(size=size, chunk=chunk, compressed="gzip" if compress else None)
    return _encode([tag, payload], options)


def gzip_compress(data: bytes, level: int = 6) -> bytes:
    deflater = zlib.compressobj(level, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def encode_ack(chunk: str) -> bytes:
    return msgpack.packb({"ack": chunk}, use_bin_type=True)


def encode_helo(helo: Helo) -> bytes:
    return msgpack.packb(
        ["HELO", {"nonce": helo.nonce, "auth": helo.auth_salt, "keepalive": helo.keepalive}],
        use_bin_type=True,
    )


def encode_ping(ping: Ping) -> bytes:
    return msgpack.packb(
        ["PING", ping.hostname, ping.shared_key_salt, ping.shared_key_digest, ping.username, ping.password_digest],
        use_bin_type=True,
    )


def encode_pong(pong: Pong) -> bytes:
    return msgpack.packb(
        ["PONG", pong.auth_ok, pong.reason, pong.hostname, pong.shared_key_digest], use_bin_type=True
    )
