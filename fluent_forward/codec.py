"""Encoders and the incremental decoder of the forward protocol. Bytes in, messages out; no I/O."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgpack

from .entries import (
    DEFAULT_MAX_ENTRIES,
    SLOW,
    Numbers,
    build,
    compression_of,
    entry,
    msgpack_error,
    packed_entries,
    unpacker,
    unpacker_options,
)
from .errors import ProtocolError
from .model import (
    EVENT_TIME_EXT,
    Ack,
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
    TimeLike,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HEARTBEAT = b"\xc0"  # msgpack nil


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


_STR_WIDTH = {0xD9: 1, 0xDA: 2, 0xDB: 4}  # str 8, 16, 32: the bytes of their length


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
    metadata = value.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProtocolError("bad_metadata", f"the metadata option must be a map, got {type(metadata).__name__}")
    extra = {k: v for k, v in value.items() if k not in ("size", "chunk", "compressed")}
    return Options(
        size=size,
        chunk=None if chunk is None else _as_str(chunk, "options"),
        compressed=None if compressed is None else _as_str(compressed, "options"),
        extra=extra,
    )


class Decoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get the complete messages back.

    A single message (and a decompressed payload) larger than ``max_message_bytes`` raises
    ``ProtocolError("message_too_large")``; after any ``ProtocolError`` the stream is unusable.

    With ``step_entries`` (> 0), an event batch comes back with its first ``step_entries`` entries only;
    ``decode_more`` decodes (inflates, unpacks, checks) the next ones, as many, in the batch's own lists,
    and says whether some are left. A caller on an event loop yields between steps, so one big chunk is
    never decoded in one go; a bad entry raises from the step that reaches it. ``next_message`` first
    finishes a batch left partial.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_entries: int = DEFAULT_MAX_ENTRIES, step_entries: int = 0) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_entries = max_entries
        self.step_entries = step_entries
        self._partial: tuple[Iterator[tuple[EventTime, Record, Metadata]], EventBatch] | None = None
        self._framer = unpacker(max_message_bytes, max_entries)  # the stream's reader (``next_message``)
        self._options = unpacker_options(max_entries)  # how msgpack builds a message msgspec does not
        self._held = bytearray()  # the bytes received from ``_start`` on
        self._walk: bool | None = None  # how the message being received is read (``_walks``)
        self._start = 0  # stream offset where the message being decoded began
        self._received = 0  # stream offset of the end of the bytes received

    def receive(self, data: bytes) -> None:
        """Buffer ``data``; take the messages out with ``next_message``."""
        self._received += len(data)
        try:
            self._framer.feed(data)
        except msgpack.BufferFull as exc:
            raise ProtocolError(
                "message_too_large", f"a message exceeds {self.max_message_bytes} bytes"
            ) from exc
        self._held += data

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive.

        A Forward message (Fluent Bit's default) is only walked by msgpack's reader (``skip``: it finds
        where the message ends, refusing what is malformed or nested too deep, and keeps only the bytes of
        a token it is inside); its bytes, held here, are then built in one msgspec call (or msgpack's,
        where msgspec would build something else: ``entries.build``). Decoding 1,000-event messages of
        realistic events, their entries checked, took 91.8k instructions per event with msgpack building
        them, 71.1k so (callgrind). Any other message msgpack builds as it reads it: for a one-event
        Message mode message, walking first and building after cost 11% more."""
        while self.decode_more():
            pass
        if self._walk is None:
            self._walk = self._walks()
            if self._walk is None:
                self._check_partial()
                return None
        try:
            obj = self._framer.skip() if self._walk else self._framer.unpack()
        except msgpack.OutOfData:
            self._check_partial()
            return None
        except ProtocolError:
            raise
        except (ValueError, TypeError) as exc:
            raise msgpack_error(exc, "message") from exc
        walked, self._walk = self._walk, None
        end = self._framer.tell()
        wire_bytes, self._start = end - self._start, end
        if not walked:
            del self._held[:wire_bytes]
            return self._classify(obj, wire_bytes, None)
        if wire_bytes == len(self._held):  # (the usual case: a sender waits for its ack, no copy)
            data, self._held = self._held, bytearray()
        else:
            data = self._held[:wire_bytes]
            del self._held[:wire_bytes]
        numbers = Numbers()
        obj = build(data, self.max_entries, numbers)
        if obj is SLOW:
            try:
                obj = msgpack.unpackb(data, **self._options)
            except ProtocolError:
                raise
            except (ValueError, TypeError) as exc:
                raise msgpack_error(exc, "message") from exc
        return self._classify(obj, wire_bytes, numbers)

    def _walks(self) -> bool | None:
        """Whether the message that starts the held bytes is walked first (Forward mode: its entries are
        built by msgspec after), built as read (False: any other, and a Forward message that says it holds
        more than ``max_entries`` entries, which msgpack refuses at that header), or not yet known (None)."""
        held = self._held
        if not held:
            return None
        if held[0] not in (0x92, 0x93):
            return False
        if len(held) < 2:
            return None
        head = held[1]
        if 0xA0 <= head <= 0xBF:
            at = 2 + (head & 0x1F)
        elif head in _STR_WIDTH:
            width = _STR_WIDTH[head]
            if len(held) < 2 + width:
                return None
            at = 2 + width + int.from_bytes(held[2:2 + width], "big")
        else:
            return False
        if at >= len(held):
            return None
        head = held[at]
        if 0x90 <= head <= 0x9F:
            return True
        if head in (0xDC, 0xDD):
            width = 2 if head == 0xDC else 4
            if at + width >= len(held):
                return None
            return int.from_bytes(held[at + 1:at + 1 + width], "big") <= self.max_entries
        return False

    def _check_partial(self) -> None:
        if len(self._held) > self.max_message_bytes:
            raise ProtocolError("message_too_large", f"a message exceeds {self.max_message_bytes} bytes")

    def decode_more(self) -> bool:
        """Decode the next ``step_entries`` entries of the batch last returned; True while some are left."""
        if self._partial is None:
            return False
        rest, batch = self._partial
        if not self._fill(rest, batch, self.step_entries):
            self._partial = None
        return self._partial is not None

    @staticmethod
    def _fill(rest: Iterator[tuple[EventTime, Record, Metadata]], batch: EventBatch, n: int) -> bool:
        """Up to ``n`` more entries of ``rest`` into ``batch`` (all of them when ``n`` is 0); True if it
        took ``n`` (some may be left)."""
        pairs, metadata = batch.entries, batch.metadata
        for taken, (time, record, meta) in enumerate(rest, 1):
            pairs.append((time, record))
            metadata.append(meta)
            if taken == n:
                return True
        return False

    def buffered(self) -> int:
        """Bytes received and not yet part of a returned message."""
        return self._received - self._start

    def feed(self, data: bytes) -> list[Message]:
        self.receive(data)
        messages: list[Message] = []
        while (message := self.next_message()) is not None:
            messages.append(message)
        return messages

    def _classify(self, obj: Any, wire_bytes: int, numbers: Numbers | None) -> Message:
        """``numbers``: what building ``obj`` with msgspec learned of its floats (None: msgpack built it)."""
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
        return self._events(head, obj, wire_bytes, numbers)

    def _events(self, tag: str, obj: list[Any], wire_bytes: int, numbers: Numbers | None) -> EventBatch:
        body = obj[1]
        if isinstance(body, list):  # Forward mode
            if len(obj) > 3:
                raise ProtocolError("bad_message", "Forward mode has at most 3 elements")
            return self._batch(tag, map(entry, body), _options(obj[2] if len(obj) == 3 else None), "forward",
                               wire_bytes, None, numbers)
        if isinstance(body, (bytes, str)):  # PackedForward / CompressedPackedForward
            if len(obj) > 3:
                raise ProtocolError("bad_message", "PackedForward mode has at most 3 elements")
            options = _options(obj[2] if len(obj) == 3 else None)
            payload = _as_bytes(body, "entries")
            codec = compression_of(payload, options.compressed)
            inside = Numbers()  # (what building the payload's entries learns)
            entries = packed_entries(payload, codec, self.max_message_bytes, self.max_entries, numbers=inside)
            return self._batch(tag, entries, options, "packed" if codec is None else "compressed", wire_bytes,
                               payload, inside)
        # Message mode: [tag, time, record, option?]; the metadata, if any, is an option
        if len(obj) not in (3, 4):
            raise ProtocolError("bad_message", "Message mode is [tag, time, record, option?]")
        options = _options(obj[3] if len(obj) == 4 else None)
        time, record, metadata = entry([body, obj[2]])
        batch = self._batch(tag, iter([(time, record, options.extra.get("metadata") or metadata)]), options,
                            "message", wire_bytes)
        return batch

    def _batch(self, tag: str, entries: Iterator[tuple[EventTime, Record, Metadata]], options: Options, mode: str,
               wire_bytes: int, payload: bytes | None = None, numbers: Numbers | None = None) -> EventBatch:
        batch = EventBatch(tag, [], options, mode, wire_bytes, [], payload, numbers, exact=True)
        if self._fill(entries, batch, self.step_entries):
            self._partial = (entries, batch)
        return batch


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
    return encode_packed(tag, payload, Options(size=size, chunk=chunk, compressed="gzip" if compress else None))


def encode_packed(tag: str, entries_field: bytes, options: Options | None = None) -> bytes:
    """PackedForward with the entries field exactly as given (already gzipped when ``options.compressed``):
    for a sender that needs that field before the message is built (the chunk chain MACs it)."""
    return _encode([tag, entries_field], options)


def gzip_compress(data: bytes, level: int = 6) -> bytes:
    deflater = zlib.compressobj(level, zlib.DEFLATED, 31)
    return deflater.compress(data) + deflater.flush()


def encode_ack(chunk: str) -> bytes:
    return msgpack.packb({"ack": chunk}, use_bin_type=True)


def _str_of_bytes(data: bytes) -> bytes:
    """``data`` as a msgpack str whatever it holds: Fluent Bit wants every handshake field as str,
    and its own nonces and salts are raw bytes in str (msgpack-python would pack bytes as bin)."""
    n = len(data)
    if n < 32:
        head = bytes([0xA0 | n])
    elif n < 2**8:
        head = b"\xd9" + n.to_bytes(1, "big")
    elif n < 2**16:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return head + data


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def encode_helo(helo: Helo) -> bytes:
    """``["HELO", {"nonce": str, "auth": str, "keepalive": bool}]`` (Fluentd sends keepalive, Fluent Bit does not;
    both out_forwards accept it)."""
    return (b"\x92" + _pack("HELO") + b"\x83" + _pack("nonce") + _str_of_bytes(helo.nonce)
            + _pack("auth") + _str_of_bytes(helo.auth_salt) + _pack("keepalive") + _pack(helo.keepalive))


def encode_ping(ping: Ping) -> bytes:
    """``["PING", hostname, salt, digest, username, password_digest]``, all six str (Fluent Bit's
    in_forward closes the connection on a bin salt)."""
    return (b"\x96" + _pack("PING") + _pack(ping.hostname) + _str_of_bytes(ping.shared_key_salt)
            + _pack(ping.shared_key_digest) + _pack(ping.username) + _pack(ping.password_digest))


def encode_pong(pong: Pong) -> bytes:
    return msgpack.packb(
        ["PONG", pong.auth_ok, pong.reason, pong.hostname, pong.shared_key_digest], use_bin_type=True
    )
