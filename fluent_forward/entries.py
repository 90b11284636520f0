"""Entries of event-carrying messages, decoded within limits. No I/O.

An entry is ``[time, record]`` or, as Fluent Bit sends by default, ``[[time, metadata], record]``;
time is EventTime (ext 0), an integer or a float. A (Compressed)PackedForward payload is inflated
(gzip or zstd: the magic bytes win over the ``compressed`` option, as in Fluent Bit's in_forward)
and decoded piece by piece, so a small message that inflates to millions of tiny entries is refused
after ``max_entries`` instead of being built in memory first. Never assumes shortest encodings.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import msgpack

from .errors import ProtocolError
from .model import EVENT_TIME_EXT, EventTime, Metadata, Record

DEFAULT_MAX_ENTRIES = 100_000
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NO_METADATA: Metadata = MappingProxyType({})
_PIECE = 64 * 1024  # inflate this much at a time


def ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT:
        try:
            return EventTime.from_bytes(data)
        except ValueError as exc:
            raise ProtocolError("bad_time", str(exc)) from exc
    return msgpack.ExtType(code, data)


def unpacker(max_bytes: int, max_entries: int) -> msgpack.Unpacker:
    """An incremental msgpack reader; arrays and maps longer than ``max_entries`` are refused at
    their header, before anything is allocated for them."""
    # surrogateescape: old clients send packed entries as msgpack "str", and Fluent Bit sends raw
    # bytes in str (HELO nonce, PING salt); we recover the bytes.
    return msgpack.Unpacker(
        raw=False, unicode_errors="surrogateescape", strict_map_key=False, ext_hook=ext_hook,
        max_buffer_size=max_bytes, max_array_len=max_entries, max_map_len=max_entries,
    )


def msgpack_error(exc: Exception, where: str) -> ProtocolError:
    text = str(exc)
    if "exceeds max_" in text:
        return ProtocolError("too_many_entries", f"{where}: {text}")
    return ProtocolError("malformed_msgpack", f"{where}: {text}")


def to_event_time(value: Any) -> EventTime:
    if isinstance(value, EventTime):
        return value
    if isinstance(value, bool):
        raise ProtocolError("bad_time", "boolean is not a time")
    if isinstance(value, int):
        if not 0 <= value < 2**32:
            raise ProtocolError("bad_time", f"integer time {value} out of range")
        return EventTime(value, 0)
    if isinstance(value, float):
        if not 0 <= value < 2**32:  # (also NaN)
            raise ProtocolError("bad_time", f"float time {value} out of range")
        return EventTime.from_float(value)
    raise ProtocolError("bad_time", f"expected EventTime, int or float, got {type(value).__name__}")


def entry(item: Any) -> tuple[EventTime, Record, Metadata]:
    """One entry of either shape: (time, record, metadata)."""
    if not isinstance(item, list) or len(item) != 2:
        raise ProtocolError("bad_entry", "an entry is [time, record] or [[time, metadata], record]")
    head, record = item
    metadata: Metadata = NO_METADATA
    if isinstance(head, list):
        if len(head) != 2:
            raise ProtocolError("bad_entry", "the head of an entry is [time, metadata]")
        head, meta = head
        if meta is not None and not isinstance(meta, dict):
            raise ProtocolError("bad_metadata", f"metadata must be a map, got {type(meta).__name__}")
        if meta:
            metadata = meta
    if not isinstance(record, dict):
        raise ProtocolError("bad_record", f"record must be a map, got {type(record).__name__}")
    return to_event_time(head), record, metadata


def _gunzip_pieces(data: bytes, limit: int) -> Iterator[bytes]:
    """Inflate one or more concatenated gzip members, a piece at a time, at most ``limit`` bytes."""
    total = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while data:
                piece = inflater.decompress(data, _PIECE)
                total += len(piece)
                if total > limit:
                    raise ProtocolError("message_too_large", f"gzip payload inflates beyond {limit} bytes")
                if piece:
                    yield piece
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if not inflater.eof:
                raise ProtocolError("bad_gzip", "truncated gzip member")
        except zlib.error as exc:
            raise ProtocolError("bad_gzip", str(exc)) from exc
        data = inflater.unused_data


def _unzstd_pieces(data: bytes, limit: int) -> Iterator[bytes]:
    import zstandard  # only when a peer sends zstd

    total = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            while piece := reader.read(_PIECE):
                total += len(piece)
                if total > limit:
                    raise ProtocolError("message_too_large", f"zstd payload inflates beyond {limit} bytes")
                yield piece
    except zstandard.ZstdError as exc:
        raise ProtocolError("bad_zstd", str(exc)) from exc


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate concatenated gzip members, refusing output beyond ``limit`` bytes."""
    return b"".join(_gunzip_pieces(data, limit))


def compression_of(payload: bytes, declared: str | None) -> str | None:
    """The codec of a packed payload: its magic bytes, else the ``compressed`` option."""
    if payload.startswith(GZIP_MAGIC):
        return "gzip"
    if payload.startswith(ZSTD_MAGIC):
        return "zstd"
    if declared in (None, "text"):
        return None
    if declared in ("gzip", "zstd"):
        raise ProtocolError(f"bad_{declared}", f"the payload is not {declared} (no magic bytes)")
    raise ProtocolError("bad_options", f"unknown compression {declared!r}")


def packed_entries(payload: bytes, codec: str | None, max_bytes: int,
                   max_entries: int) -> Iterator[tuple[EventTime, Record, Metadata]]:
    """The entries of a PackedForward payload, inflated and decoded piece by piece."""
    if codec == "gzip":
        pieces: Iterator[bytes] = _gunzip_pieces(payload, max_bytes)
    elif codec == "zstd":
        pieces = _unzstd_pieces(payload, max_bytes)
    else:
        pieces = iter((payload,))
    reader = unpacker(max(max_bytes, len(payload)), max_entries)
    count = 0
    for piece in pieces:
        reader.feed(piece)
        try:
            for item in reader:
                count += 1
                if count > max_entries:
                    raise ProtocolError("too_many_entries", f"more than {max_entries} entries in one message")
                yield entry(item)
        except ProtocolError:
            raise
        except (ValueError, TypeError) as exc:
            raise msgpack_error(exc, "packed entries") from exc
    if reader.read_bytes(1):  # (bytes left that are not a whole entry)
        raise ProtocolError("malformed_msgpack", "packed entries: the payload ends inside an entry")
