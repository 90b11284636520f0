"""The codec with byte literals: round trips of every mode, byte-by-byte feeding, limits."""

from __future__ import annotations

import gzip
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fluent_forward as ff
from fluent_forward import Decoder, EventBatch, EventTime, Options, ProtocolError

T = EventTime(1_763_629_200, 123_456_789)
REC = {"kind": "Event", "auditID": "a-1", "stage": "ResponseComplete", "n": 1, "nested": {"l": [1, "x", None]}}


def feed_bytewise(data: bytes, decoder: Decoder | None = None) -> list[ff.Message]:
    decoder = decoder or Decoder()
    out: list[ff.Message] = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i : i + 1]))
    return out


def only_batch(messages: list[ff.Message]) -> EventBatch:
    assert len(messages) == 1 and isinstance(messages[0], EventBatch)
    return messages[0]


def test_event_time_wire_format_is_ext0_with_two_big_endian_uint32() -> None:
    packed = msgpack.packb([ff.codec._time_ext(T), {}], use_bin_type=True)
    assert packed[1:3] == b"\xd7\x00"  # fixext 8, type 0
    assert packed[3:11] == (1_763_629_200).to_bytes(4, "big") + (123_456_789).to_bytes(4, "big")


def test_event_time_from_bytes_is_an_ordinary_frozen_event_time() -> None:
    import dataclasses

    wire = T.to_bytes()
    for data in (wire, memoryview(wire)):
        made = EventTime.from_bytes(data)
        assert (made, hash(made), repr(made), type(made)) == (T, hash(T), repr(T), EventTime)
        assert made < EventTime(T.seconds, T.nanoseconds + 1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.seconds = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        EventTime.from_bytes(wire[:7])


def test_message_mode_round_trip_bytewise() -> None:
    data = ff.encode_message("audit", T, REC, Options(chunk="c1"))
    batch = only_batch(feed_bytewise(data))
    assert (batch.tag, batch.entries, batch.options.chunk, batch.mode) == ("audit", [(T, REC)], "c1", "message")
    assert batch.wire_bytes == len(data)


def test_forward_mode_round_trip() -> None:
    entries = [(T, REC), (EventTime(5, 6), {"a": 1})]
    batch = only_batch(Decoder().feed(ff.encode_forward("audit", entries, Options(size=2, chunk="c2"))))
    assert batch.entries == entries and batch.options.size == 2 and batch.mode == "forward"


@pytest.mark.parametrize("compress", [False, True])
def test_packed_and_compressed_round_trip_bytewise(compress: bool) -> None:
    packed = b"".join(ff.encode_entry(T, {**REC, "i": i}) for i in range(50))
    data = ff.encode_packed_forward("audit", packed, chunk="abc", size=50, compress=compress)
    batch = only_batch(feed_bytewise(data))
    assert [r["i"] for _, r in batch.entries] == list(range(50))
    assert batch.options == Options(size=50, chunk="abc", compressed="gzip" if compress else None)
    assert batch.mode == ("compressed" if compress else "packed")


def test_concatenated_gzip_members_are_one_payload() -> None:
    first = b"".join(ff.encode_entry(T, {"i": i}) for i in range(3))
    second = b"".join(ff.encode_entry(T, {"i": i}) for i in range(3, 5))
    payload = gzip.compress(first) + gzip.compress(second)
    data = msgpack.packb(["audit", payload, {"compressed": "gzip"}], use_bin_type=True)
    assert [r["i"] for _, r in only_batch(Decoder().feed(data)).entries] == [0, 1, 2, 3, 4]


def test_integer_and_float_times_are_accepted() -> None:
    data = msgpack.packb(["t", [[10, {"a": 1}], [1.5, {"b": 2}]]], use_bin_type=True)
    batch = only_batch(Decoder().feed(data))
    assert [t for t, _ in batch.entries] == [EventTime(10, 0), EventTime(1, 500_000_000)]


def test_packed_entries_sent_as_str_by_old_clients() -> None:
    packed = ff.encode_entry(T, REC)
    raw = msgpack.packb(["t", packed.decode("latin-1")], use_bin_type=True)  # a str of other bytes
    with pytest.raises(ProtocolError):
        Decoder().feed(raw)  # latin-1 re-encoding changes bytes: must be refused, not misread
    str_typed = b"\x92\xa1t" + b"\xda" + len(packed).to_bytes(2, "big") + packed  # [ "t", str16(packed) ]
    assert only_batch(Decoder().feed(str_typed)).entries == [(T, REC)]


def test_ack_heartbeat_and_handshake_messages() -> None:
    msgs = Decoder().feed(ff.encode_ack("c9") + ff.HEARTBEAT)
    assert msgs == [ff.Ack("c9"), ff.Heartbeat()]


def test_several_messages_in_one_feed_and_split_across_feeds() -> None:
    data = b"".join(ff.encode_message("t", T, {"i": i}) for i in range(5))
    d = Decoder()
    first = d.feed(data[:37])
    rest = d.feed(data[37:])
    assert [only_batch([m]).entries[0][1]["i"] for m in first + rest] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (msgpack.packb(42), "not_an_array"),
        (msgpack.packb({"x": 1}), "unexpected_map"),
        (msgpack.packb([1, [], None]), "bad_tag"),
        (msgpack.packb(["t", "not-time", {}]), "bad_entry"),
        (msgpack.packb(["t", None, {}]), "bad_time"),
        (msgpack.packb(["t", 1, "not-a-map"]), "bad_record"),
        (msgpack.packb(["t", [[1]]]), "bad_entry"),
        (msgpack.packb(["t", b"\x00garbage", {"compressed": "gzip"}], use_bin_type=True), "bad_gzip"),
        (msgpack.packb(["t", b"", {"compressed": "lz4"}], use_bin_type=True), "bad_options"),
        (msgpack.packb(["t", b"\x00garbage", {"compressed": "zstd"}], use_bin_type=True), "bad_zstd"),
        (msgpack.packb(["t", 1, {}, "opts"]), "bad_options"),
        (b"\xc1", "malformed_msgpack"),
    ],
)
def test_malformed_input_raises_one_exception_type_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as err:
        Decoder().feed(data)
    assert err.value.reason == reason


def test_http_request_on_the_forward_port_is_refused() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_oversized_message_is_refused_before_it_is_buffered() -> None:
    d = Decoder(max_message_bytes=1024)
    big = ff.encode_message("t", T, {"x": "y" * 5000})
    with pytest.raises(ProtocolError) as err:
        for i in range(0, len(big), 100):
            d.feed(big[i : i + 100])
    assert err.value.reason == "message_too_large"


def test_gzip_bomb_is_refused_by_the_size_limit() -> None:
    bomb = gzip.compress(b"\x00" * (20 * 1024 * 1024))  # 20 MiB of zeros, ~20 KiB on the wire
    assert len(bomb) < 100_000
    data = msgpack.packb(["t", bomb, {"compressed": "gzip"}], use_bin_type=True)
    with pytest.raises(ProtocolError) as err:
        Decoder(max_message_bytes=1024 * 1024).feed(data)
    assert err.value.reason == "bad_entry"  # decoded as it inflates: refused at the first byte
    entries = gzip.compress(b"\x92\x00\x80" * (7 * 1024 * 1024))  # 7 Mi valid entries [0, {}], 21 MiB inflated
    data = msgpack.packb(["t", entries, {"compressed": "gzip"}], use_bin_type=True)
    with pytest.raises(ProtocolError) as err:
        Decoder(max_message_bytes=1024 * 1024, max_entries=10**8).feed(data)
    assert err.value.reason == "message_too_large"


def test_truncated_gzip_is_refused() -> None:
    payload = gzip.compress(ff.encode_entry(T, REC))[:-6]
    data = msgpack.packb(["t", payload, {"compressed": "gzip"}], use_bin_type=True)
    with pytest.raises(ProtocolError) as err:
        Decoder().feed(data)
    assert err.value.reason == "bad_gzip"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
records = st.dictionaries(st.text(), json_values, max_size=6)
times = st.builds(EventTime, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))
entries_st = st.lists(st.tuples(times, records), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(entries=entries_st, mode=st.sampled_from(["message", "forward", "packed", "compressed"]),
       chunk=st.none() | st.text(min_size=1, max_size=30), split=st.integers(1, 64))
def test_round_trip_property(entries: list[tuple[EventTime, dict]], mode: str, chunk: str | None, split: int) -> None:
    if mode == "message":
        entries = entries[:1]
        data = ff.encode_message("audit", entries[0][0], entries[0][1], Options(chunk=chunk))
    elif mode == "forward":
        data = ff.encode_forward("audit", entries, Options(chunk=chunk))
    else:
        packed = b"".join(ff.encode_entry(t, r) for t, r in entries)
        data = ff.encode_packed_forward("audit", packed, chunk=chunk, compress=mode == "compressed")
    d = Decoder()
    out: list[ff.Message] = []
    for i in range(0, len(data), split):
        out.extend(d.feed(data[i : i + split]))
    batch = only_batch(out)
    assert batch.entries == entries
    assert batch.options.chunk == chunk
    assert batch.mode == mode


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_error(data: bytes) -> None:
    try:
        Decoder(max_message_bytes=4096).feed(data)
    except ProtocolError:
        pass


def test_zstd_by_option_and_by_magic_bytes() -> None:
    import zstandard

    packed = b"".join(ff.encode_entry(T, {"i": i}) for i in range(20))
    payload = zstandard.ZstdCompressor().compress(packed[:60]) + zstandard.ZstdCompressor().compress(packed[60:])
    for options in ({"compressed": "zstd"}, {}, {"compressed": "gzip"}):  # the magic bytes win, as in Fluent Bit
        batch = only_batch(feed_bytewise(msgpack.packb(["t", payload, options], use_bin_type=True)))
        assert [r["i"] for _, r in batch.entries] == list(range(20)) and batch.mode == "compressed"
    gz = gzip.compress(packed)
    assert len(only_batch(Decoder().feed(msgpack.packb(["t", gz, {"compressed": "zstd"}]))).entries) == 20


def test_zstd_bomb_is_refused_by_the_size_limit() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(b"\x92\x00\x80" * (2 * 1024 * 1024))
    with pytest.raises(ProtocolError) as err:
        Decoder(max_message_bytes=1024 * 1024, max_entries=10**8).feed(msgpack.packb(["t", bomb]))
    assert err.value.reason == "message_too_large"


@pytest.mark.parametrize("mode", ["forward", "packed", "compressed"])
def test_entries_with_metadata_and_map32_headers(mode: str) -> None:
    """Fluent Bit's default entries: [[EventTime, metadata], record], maps with map32 headers."""
    def map32(d: dict) -> bytes:
        return b"\xdf" + len(d).to_bytes(4, "big") + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in d.items())

    t = b"\xd7\x00" + T.to_bytes()
    entries = [b"\x92\x92" + t + map32({"k8s": {"ns": "prod"}}) + map32(REC), b"\xdd\x00\x00\x00\x02" + t + map32({"a": 1})]
    body = b"".join(entries)
    if mode == "forward":
        data = b"\x92\xa1t" + b"\xdd" + len(entries).to_bytes(4, "big") + body
    else:
        payload = gzip.compress(body) if mode == "compressed" else body
        data = b"\x92\xa1t" + msgpack.packb(payload, use_bin_type=True)
    batch = only_batch(feed_bytewise(data))
    assert batch.entries == [(T, REC), (T, {"a": 1})]
    assert batch.metadata == [{"k8s": {"ns": "prod"}}, {}]
    records = batch.records()
    assert records == [REC, {"a": 1}] and records.metadata == batch.metadata and records.tag == "t"
    assert records.times == [T, T]


def test_message_mode_metadata_option_and_fluent_signal() -> None:
    data = ff.encode_message("t", T, REC, Options(chunk="c", extra={"fluent_signal": 0, "metadata": {"m": 1}}))
    batch = only_batch(Decoder().feed(data))
    assert batch.metadata == [{"m": 1}] and batch.options.signal == 0 and batch.options.chunk == "c"


def test_entry_amplification_is_refused_after_max_entries() -> None:
    """30 KB of gzip that inflates to 10 million tiny entries: refused at the 100,001st, never built."""
    import tracemalloc

    bomb = gzip.compress(b"\x92\x00\x80" * 10_000_000, 9)
    assert len(bomb) < 100_000
    data = msgpack.packb(["t", bomb, {"compressed": "gzip"}], use_bin_type=True)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as err:
            Decoder().feed(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_many_entries"
    assert peak < 200 * 1024 * 1024  # the old decoder built all 10 million entries (gigabytes)


def test_forward_mode_with_too_many_entries_is_refused_at_the_array_header() -> None:
    data = b"\x92\xa1t\xdd" + (200_000).to_bytes(4, "big") + b"\x92\x00\x80" * 10
    with pytest.raises(ProtocolError) as err:
        Decoder().feed(data)
    assert err.value.reason == "too_many_entries"


# ---- Forward mode: framed by msgpack's walk, built by msgspec (or msgpack where msgspec would differ) ----

def _all_by_msgpack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder as it was: msgpack builds every message as it reads it."""
    monkeypatch.setattr(Decoder, "_walks", lambda _self: False)


def _decode_all(data: bytes, split: int, **limits: int) -> list[ff.Message] | str:
    decoder, out = Decoder(**limits), []
    try:
        for i in range(0, len(data), split):
            out.extend(decoder.feed(data[i : i + split]))
    except ProtocolError as exc:
        return exc.reason
    return out


keys = st.text(max_size=8) | st.integers(-5, 300) | st.binary(max_size=4)
odd_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=20) | st.builds(msgpack.ExtType, st.integers(1, 127), st.binary(max_size=9))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
heads = times | st.integers(0, 2**32 - 1) | st.floats(0, 2**31) | st.tuples(times, st.dictionaries(st.text(max_size=5), odd_values, max_size=2))
odd_messages = st.tuples(
    st.text(max_size=300),
    st.lists(st.tuples(heads, st.dictionaries(keys, odd_values, max_size=5)), max_size=6),
    st.none() | st.dictionaries(st.sampled_from(["chunk", "size", "x"]), odd_values, max_size=2),
)


def _wire(head: object) -> object:
    if isinstance(head, EventTime):
        return msgpack.ExtType(0, head.to_bytes())
    if isinstance(head, tuple):
        return [_wire(head[0]), head[1]]
    return head


def _forward(tag: str, entries: list[tuple[object, object]], options: object) -> bytes:
    return msgpack.packb([tag, [[_wire(h), r] for h, r in entries], *([] if options is None else [options])],
                         use_bin_type=True, strict_types=False)


def _message(tag: str, entries: list[tuple[object, object]], options: object) -> bytes:
    head, record = entries[0] if entries else (None, None)
    return msgpack.packb([tag, _wire(head), record, *([] if options is None else [options])], use_bin_type=True)


@settings(max_examples=300, deadline=None)
@given(message=odd_messages, split=st.integers(1, 200), max_entries=st.integers(3, 40), mode=st.sampled_from([_forward, _message]))
def test_forward_and_message_mode_decode_as_msgpack_alone_would(message: tuple, split: int, max_entries: int,
                                                                mode: Any) -> None:
    """Whatever a Forward or Message mode message holds (binary, other ext types, Timestamps, int and binary
    keys, long tags, any limit), fed in any pieces, the messages or the refusal are those of msgpack
    building all."""
    data = mode(*message)
    ours = _decode_all(data, split, max_entries=max_entries)
    with pytest.MonkeyPatch.context() as m:
        _all_by_msgpack(m)
        theirs = _decode_all(data, split, max_entries=max_entries)
    assert ours == theirs


def test_forward_mode_keeps_text_that_is_not_utf8_as_msgpack_does() -> None:
    data = _forward("audit", [(T, {"user": b"\xff\xfeok"})], None).replace(b"\xc4\x04\xff\xfeok", b"\xa4\xff\xfeok")
    batch = only_batch(Decoder().feed(data))
    assert batch.entries == [(T, {"user": "\udcff\udcfeok"})]


@pytest.mark.parametrize("kind", ["array", "map"])
def test_forward_mode_refuses_a_nested_container_longer_than_the_limit(kind: str) -> None:
    items = 200_000
    body = (b"\xdd" if kind == "array" else b"\xdf") + items.to_bytes(4, "big") + (b"\xc0" if kind == "array" else b"\x01\xc0") * items
    time = msgpack.packb(msgpack.ExtType(0, T.to_bytes()))
    data = b"\x92\xa5audit\x92" + b"\x92" + time + b"\x81\xa2ok\x01" + b"\x92" + time + b"\x81\xa1x" + body
    assert msgpack.unpackb(data, strict_map_key=False)[1][0][1] == {"ok": 1}  # (a well-formed message)
    for split in (len(data), 65536):
        assert _decode_all(data, split) == "too_many_entries"


def test_forward_mode_too_many_entries_is_refused_before_the_message_is_whole() -> None:
    d = Decoder(max_entries=10)
    head = b"\x93\xa5audit\xdc" + (11).to_bytes(2, "big")
    with pytest.raises(ProtocolError) as err:
        d.feed(head + ff.encode_entry(T, REC))
    assert err.value.reason == "too_many_entries"


def test_a_forward_message_of_small_entries_is_refused_once_past_the_size_limit() -> None:
    """The walk keeps only the token it is in; the message's own bytes are what the limit counts."""
    d = Decoder(max_message_bytes=10_000)
    data = ff.encode_forward("audit", [(T, {"i": i, "pad": "p" * 40}) for i in range(1000)])
    fed = 0
    with pytest.raises(ProtocolError) as err:
        for i in range(0, len(data), 500):
            d.feed(data[i : i + 500])
            fed += 500
            assert d.buffered() == fed
    assert err.value.reason == "message_too_large" and fed <= 10_500


def test_a_forward_message_between_others_in_one_feed_and_byte_by_byte() -> None:
    entries = [(T, dict(REC, i=i)) for i in range(50)]
    data = ff.encode_message("t", T, {"i": -1}) + ff.encode_forward("audit", entries, Options(chunk="c")) + b"\xc0"
    for out in (Decoder().feed(data), feed_bytewise(data)):
        assert [type(m).__name__ for m in out] == ["EventBatch", "EventBatch", "Heartbeat"]
        second = out[1]
        assert isinstance(second, EventBatch) and second.entries == entries and second.mode == "forward"
        assert second.options.chunk == "c" and second.wire_bytes == len(data) - len(ff.encode_message("t", T, {"i": -1})) - 1
