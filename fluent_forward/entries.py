"""Entries of event-carrying messages, decoded within limits. No I/O.

An entry is ``[time, record]`` or, as Fluent Bit sends by default, ``[[time, metadata], record]``;
time is EventTime (ext 0), an integer or a float. A (Compressed)PackedForward payload is inflated
(gzip or zstd: the magic bytes win over the ``compressed`` option, as in Fluent Bit's in_forward)
and decoded piece by piece, so a small message that inflates to millions of tiny entries is refused
after ``max_entries`` instead of being built in memory first. Never assumes shortest encodings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import MappingProxyType
from typing import Any, cast

import msgpack
import msgspec
from isal import igzip_lib

from .errors import ProtocolError
from .model import EVENT_TIME_EXT, EventTime, Metadata, Record

DEFAULT_MAX_ENTRIES = 100_000
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
NO_METADATA: Metadata = MappingProxyType({})
_PIECE = 64 * 1024  # inflate this much at a time
BATCH = 100  # entries of a packed payload built in one call
_INFLATE_ERROR = cast("type[Exception]", igzip_lib.IsalError)  # (python-isal's stub calls it an instance)


def ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_EXT:
        try:
            return EventTime.from_bytes(data)
        except ValueError as exc:
            raise ProtocolError("bad_time", str(exc)) from exc
    return msgpack.ExtType(code, data)


def _fast_ext(code: int, data: memoryview) -> Any:
    if code == EVENT_TIME_EXT and len(data) == 8:  # (one per entry: no copy, no second call)
        return EventTime.from_bytes(data)
    return ext_hook(code, bytes(data))


_FAST = msgspec.msgpack.Decoder(ext_hook=_fast_ext)


def _marks(data: bytes | bytearray, marker: bytes, start: int = 0) -> Iterator[int]:
    """Each offset of the byte ``marker`` in ``data`` from ``start`` on, found by memchr (``find``): the
    scans below look only at those, so the bytes between cost next to nothing."""
    at = data.find(marker, start)
    while at != -1:
        yield at
        at = data.find(marker, at + 1)


def _may_hold_timestamp(data: bytes | bytearray) -> bool:
    """Whether ``data`` may hold a msgpack Timestamp (ext -1 as fixext 4, fixext 8 or ext 8 of 12 bytes),
    which msgspec would build as a datetime. 0xff is never part of UTF-8 text, so it is rare and memchr
    finds each one (three ``in`` searches for the two-byte marks cost 13k instructions per event); one
    that is not a Timestamp's (in a number, in binary data) only sends that run the slower way."""
    return any(data[at - 1] in (0xD6, 0xD7) or (data[at - 1] == 0x0C and at > 1 and data[at - 2] == 0xC7)
               for at in _marks(data, b"\xff", 1))


def _may_hold_long_container(data: bytes | bytearray, max_entries: int) -> bool:
    """Whether ``data``, one whole msgpack object, may hold an array or map of more than ``max_entries``
    items below its first header: msgpack refuses one at its header, where msgspec has no such limit (and
    the walk, ``skip``, does not count), so a few KB of gzip would become a list of millions of items.

    Only array 32 and map 32 (0xdd, 0xdf: a 4-byte length) can, array 16 and map 16 (0xdc, 0xde) when the
    limit is below 65,535, any container when it is below 15; and a real header's items, a byte each at
    least, end inside ``data``. memchr finds each marker; one that is not a header's (in text, in an
    EventTime) rarely passes both tests, and then only sends the run the slower way."""
    if max_entries < 15:  # (a fixarray or fixmap can be too long: msgpack decides every run)
        return True
    markers = (b"\xdd", b"\xdf") if max_entries >= 0xFFFF else (b"\xdc", b"\xdd", b"\xde", b"\xdf")
    for marker in markers:
        width = 4 if marker in (b"\xdd", b"\xdf") else 2
        if any(max_entries < int.from_bytes(data[at + 1:at + 1 + width], "big") <= len(data) - at - 1 - width
               for at in _marks(data, marker, 1)):
            return True
    return False


def _may_hold_nonfinite(data: bytes | bytearray) -> bool:
    """Whether ``data`` may hold a float that is NaN or infinite. msgpack writes every float as 0xcb and
    8 bytes or 0xca and 4 (IEEE 754, big-endian), and one is NaN or infinite when its exponent bits are
    all ones (the next byte ends in 0x7f, the one after starts with 0xf (64 bits) or 0x8 (32)). memchr
    finds each marker; one that is not a float's (in text, in a number, in an EventTime) only costs a look."""
    return any(at + 2 >= len(data) or (data[at + 1] & 0x7F == 0x7F and data[at + 2] & mask == mask)
               for marker, mask in ((b"\xcb", 0xF0), (b"\xca", 0x80)) for at in _marks(data, marker))


class Numbers:
    """What decoding a payload learned of its floats: ``finite`` stays True while every run of entries was
    built by msgspec from bytes that hold no NaN or infinite float (``_may_hold_nonfinite``). The audit
    model then need not look for them in each record (``kube_audit.model.audit.parse``)."""

    __slots__ = ("finite",)

    def __init__(self) -> None:
        self.finite = True


def unpacker_options(max_entries: int) -> dict[str, Any]:
    """How msgpack reads what peers send: arrays and maps longer than ``max_entries`` are refused at
    their header, before anything is allocated for them."""
    # surrogateescape: old clients send packed entries as msgpack "str", and Fluent Bit sends raw
    # bytes in str (HELO nonce, PING salt); we recover the bytes.
    return {"raw": False, "unicode_errors": "surrogateescape", "strict_map_key": False, "ext_hook": ext_hook,
            "max_array_len": max_entries, "max_map_len": max_entries}


def unpacker(max_bytes: int, max_entries: int) -> msgpack.Unpacker:
    """An incremental msgpack reader (``unpacker_options``)."""
    return msgpack.Unpacker(max_buffer_size=max_bytes, **unpacker_options(max_entries))


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
    """Inflate one or more concatenated gzip members, a piece at a time, at most ``limit`` bytes.

    ISA-L's inflater (python-isal) checks the header, CRC-32 and length as zlib does and takes 2.3x less
    CPU on realistic 1,000-event chunks (5.3 -> 2.8 µs per event). It takes all of its input at once and
    hands the output out ``_PIECE`` at a time: a member is whole at ``eof``; empty output while it asks for
    more input means the member was cut short."""
    total = 0
    while data:
        inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        try:
            while not inflater.eof:
                piece = inflater.decompress(data, _PIECE)
                data = b""
                if not piece:
                    if inflater.eof:
                        break
                    raise ProtocolError("bad_gzip", "truncated gzip member" if inflater.needs_input else
                                        "the inflater made no progress")
                total += len(piece)
                if total > limit:
                    raise ProtocolError("message_too_large", f"gzip payload inflates beyond {limit} bytes")
                yield piece
        except _INFLATE_ERROR as exc:
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


def packed_entries(payload: bytes, codec: str | None, max_bytes: int, max_entries: int,
                   batch: int = BATCH, numbers: Numbers | None = None) -> Iterator[tuple[EventTime, Record, Metadata]]:
    """The entries of a PackedForward payload, inflated and decoded piece by piece, ``batch`` at a time.

    msgpack's reader walks the entries without building them (``skip``: it finds where each ends and
    refuses what is malformed or nested too deep); each run of ``batch`` whole entries is then built by
    msgspec in one call: a gzip chunk of realistic events took 102.4k instructions per event to inflate and
    build with msgpack alone, 86.1k so (callgrind). msgspec has no reader that takes a stream a piece at
    a time, hence the split. What msgspec would build otherwise than msgpack (a Timestamp, ext -1: msgspec
    makes a datetime; text that is not UTF-8, which msgpack keeps with surrogateescape; a map keyed by a
    map; an array or map header of more than ``max_entries`` items, which msgpack refuses and msgspec would
    build) goes the old way, one run at a time, so the result is the same either way. (One difference: an
    array used as a map key becomes a tuple, which the model turns into a string, where msgpack refused
    the message.)
    ``numbers``, if given, learns whether the entries may hold a NaN or infinite float (``Numbers``)."""
    if codec == "gzip":
        pieces: Iterator[bytes] = _gunzip_pieces(payload, max_bytes)
    elif codec == "zstd":
        pieces = _unzstd_pieces(payload, max_bytes)
    else:
        pieces = iter((payload,))
    reader = unpacker(max(max_bytes, len(payload)), max_entries)
    held = bytearray()  # the inflated bytes from stream offset ``base`` on: the run being walked
    base = count = 0
    failure: ProtocolError | None = None
    more = True
    while more and failure is None:
        n, end = 0, base
        while n < batch:
            try:
                reader.skip()
            except msgpack.OutOfData:
                try:
                    piece = next(pieces, None)
                except ProtocolError as exc:  # bad gzip, too large: after the whole entries before it
                    failure = exc
                    break
                if piece is None:
                    more = False
                    break
                reader.feed(piece)
                held += piece
                continue
            except (ValueError, TypeError) as exc:  # FormatError, StackError, BufferFull
                failure = msgpack_error(exc, "packed entries")
                break
            count += 1
            if count > max_entries:
                failure = ProtocolError("too_many_entries", f"more than {max_entries} entries in one message")
                break
            n, end = n + 1, reader.tell()
        if n:
            with memoryview(held) as view:
                run = _run(view[:end - base], n, max_entries, numbers)
            del held[:end - base]
            base = end
            yield from map(entry, run)
    if failure is not None:
        raise failure
    if held:  # (bytes left that are not a whole entry)
        raise ProtocolError("malformed_msgpack", "packed entries: the payload ends inside an entry")


SLOW = object()  # what ``build`` returns when msgpack must decide


def build(data: bytes | bytearray, max_entries: int, numbers: Numbers | None = None) -> Any:
    """The one whole msgpack object in ``data`` built by msgspec, or ``SLOW`` when msgpack must build it:
    ``data`` may hold what msgspec would build otherwise (see packed_entries), or msgspec refused it
    (then msgpack's error is the one raised). ``numbers``, if given, learns whether it may hold a NaN or
    infinite float; anything left to msgpack may."""
    if not (_may_hold_timestamp(data) or _may_hold_long_container(data, max_entries)):
        try:
            built = _FAST.decode(data)
        except Exception:  # noqa: BLE001 (whatever msgspec refuses, msgpack decides)
            pass
        else:
            if numbers is not None and numbers.finite and _may_hold_nonfinite(data):
                numbers.finite = False
            return built
    if numbers is not None:
        numbers.finite = False
    return SLOW


def _run(view: memoryview, n: int, max_entries: int, numbers: Numbers | None = None) -> Iterable[Any]:
    """The ``n`` whole entries in ``view``, built (see packed_entries)."""
    data = b"".join((b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big"), view))
    built = build(data, max_entries, numbers)
    if built is not SLOW:
        return cast("list[Any]", built)
    slow = unpacker(len(data), max_entries)
    slow.feed(view)
    return _each(slow)


def _each(reader: msgpack.Unpacker) -> Iterator[Any]:
    try:
        yield from reader
    except (ValueError, TypeError) as exc:
        raise msgpack_error(exc, "packed entries") from exc
