"""Packed entries are walked by msgpack and built by msgspec a run at a time (fluent_forward/entries.py):
the result and the errors must be those of msgpack building each entry, whatever the bytes."""

from __future__ import annotations

import gzip
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fluent_forward import EventTime, ProtocolError
from fluent_forward.entries import entry, msgpack_error, packed_entries, unpacker

LIMIT = 64 * 1024 * 1024


def reference(payload: bytes, max_entries: int = 100_000, limits: bool = False) -> list[Any]:
    """What msgpack alone makes of an uncompressed payload, entry by entry (the decoder before msgspec).
    ``limits``: a length limit is too_many_entries, as msgpack_error says (else malformed_msgpack, like any
    ValueError: a too-long header in trailing garbage is malformed to the walk, which needs its items)."""
    reader = unpacker(LIMIT, max_entries)
    reader.feed(payload)
    out: list[Any] = []
    try:
        for item in reader:
            if len(out) == max_entries:
                raise ProtocolError("too_many_entries", "more entries than the limit")
            out.append(entry(item))
        left = reader.read_bytes(1)
    except ValueError as exc:  # FormatError, StackError, the length limits; read_bytes: "an object is incomplete"
        raise (msgpack_error(exc, "reference") if limits else ProtocolError("malformed_msgpack", str(exc))) from None
    if left:
        raise ProtocolError("malformed_msgpack", "ends inside an entry")
    return out


def ours(payload: bytes, codec: str | None = None, batch: int = 100, max_entries: int = 100_000) -> list[Any]:
    return list(packed_entries(payload, codec, LIMIT, max_entries, batch=batch))


def et(seconds: int = 1_700_000_000, nanos: int = 5) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanos))


def pack(*entries: Any) -> bytes:
    return b"".join(msgpack.packb(e, use_bin_type=True, datetime=False) for e in entries)


ODD_VALUES = [
    msgpack.Timestamp(1, 2),  # ext -1: msgspec would make a datetime of it
    msgpack.ExtType(5, b"abc"),
    b"\xff\xfe binary",
    1.5, -(2**63), 2**64 - 1, None, True,
    {1: "int key", None: "nil key", b"k": "bin key", 2.5: "float key"},
    [[[[{"deep": []}]]]],
]
BAD_UTF8 = b"\x81\xa4text\xa3\xff\xfe\xfd"  # {"text": <3 bytes that are not UTF-8>}: msgpack keeps them, escaped


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_odd_values_come_out_as_msgpack_builds_them(value: Any) -> None:
    payload = pack(*([[et(), {"i": i}] for i in range(150)] + [[et(), {"odd": value}]]))
    assert ours(payload) == reference(payload)
    assert type(ours(payload)[-1][1]["odd"]) is type(reference(payload)[-1][1]["odd"])


def test_text_that_is_not_utf8_is_kept_with_surrogateescape_in_its_run_only() -> None:
    good = pack(*[[et(), {"i": i}] for i in range(100)])
    payload = good + b"\x92\xd7\x00" + struct.pack(">II", 7, 0) + BAD_UTF8 + good
    got = ours(payload)
    assert got == reference(payload) and len(got) == 201
    assert got[100][1]["text"] == "\udcff\udcfe\udcfd" and got[100][0] == EventTime(7, 0)


@pytest.mark.parametrize("batch", [1, 7, 100, 1000])
@pytest.mark.parametrize("codec", [None, "gzip"])
def test_runs_across_inflated_pieces_give_every_entry_once_in_order(batch: int, codec: str | None) -> None:
    records = [{"n": i, "body": f"x{i}" * (i % 300)} for i in range(2500)]  # runs straddle 64 KiB pieces
    raw = pack(*([[et(1, i), r] for i, r in enumerate(records)]))
    payload = gzip.compress(raw) if codec else raw
    got = ours(payload, codec, batch)
    assert [r for _, r, _ in got] == records and [t for t, _, _ in got] == [EventTime(1, i) for i in range(2500)]


def test_fluent_bit_entries_keep_their_metadata_and_classic_ones_have_none() -> None:
    payload = pack([[et(), {"m": 1}], {"a": 1}], [1_700_000_000, {"b": 2}], [1.25, {"c": 3}])
    assert ours(payload) == reference(payload)
    assert [m for _, _, m in ours(payload)] == [{"m": 1}, {}, {}]


@pytest.mark.parametrize("tail, reason", [
    (b"\x92\xd7\x00\x00", "malformed_msgpack"),  # the payload ends inside an entry
    (b"\xc1", "malformed_msgpack"),  # a byte msgpack never uses
    (b"\x91" * 3000, "malformed_msgpack"),  # nested deeper than msgpack's stack: refused while walking
    (b"\x93\x01\x02\x03", "bad_entry"),
    (b"\x92\xd6\x00\x00\x00\x00\x01\x81\x01\x02", "bad_time"),  # ext 0 of 4 bytes is no EventTime
    (b"\x92\x01\x91\x01", "bad_record"),
])
def test_a_bad_entry_raises_its_reason_after_the_whole_entries_before_it(tail: bytes, reason: str) -> None:
    payload = pack(*[[et(), {"i": i}] for i in range(130)]) + tail
    got: list[Any] = []
    with pytest.raises(ProtocolError) as err:
        got.extend(packed_entries(payload, None, LIMIT, 100_000))
    assert err.value.reason == reason
    assert [r for _, r, _ in got] == [{"i": i} for i in range(130)]


def test_the_entry_limit_still_counts_entries_across_runs() -> None:
    payload = pack(*[[1, {}] for _ in range(251)])
    with pytest.raises(ProtocolError) as err:
        list(packed_entries(payload, None, LIMIT, 250))
    assert err.value.reason == "too_many_entries"
    assert len(list(packed_entries(payload, None, LIMIT, 251))) == 251


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.binary(max_size=10) | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999))
    | st.builds(msgpack.ExtType, st.integers(1, 127), st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**64 - 1), inner, max_size=4),
    max_leaves=20)
entries_st = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.dictionaries(st.text(max_size=8), values, max_size=5)),
                      max_size=40)


@settings(max_examples=300, deadline=None)
@given(entries=entries_st, batch=st.integers(1, 50), garbage=st.binary(max_size=12))
def test_property_same_entries_and_same_error_as_msgpack(entries: list[Any], batch: int, garbage: bytes) -> None:
    payload = pack(*[[et(t, 0), r] for t, r in entries]) + garbage
    try:
        expected: Any = reference(payload)
    except ProtocolError as exc:
        expected = exc.reason
    except TypeError:  # garbage that holds a map with an array for a key, which msgpack cannot hash: where
        assume(False)  # ours differs on purpose (test_garbage_with_an_array_for_a_map_key_is_a_protocol_error)
    try:
        got: Any = ours(payload, None, batch)
    except ProtocolError as exc:
        got = exc.reason
    assert got == expected


def test_garbage_with_an_array_for_a_map_key_is_a_protocol_error() -> None:
    """msgpack alone raises TypeError (unhashable list) on such a map; msgspec builds the key as a tuple, and
    a map is not an entry (found by the property above: garbage b"\x81\x90\x00")."""
    for garbage in (b"\x81\x90\x00", b"\x81\x91\x01\x02"):
        with pytest.raises(ProtocolError) as err:
            ours(pack([et(), {"a": 1}]) + garbage)
        assert err.value.reason == "bad_entry"


@pytest.mark.parametrize("compress", [False, True])
def test_a_payload_that_ends_inside_a_map_is_a_protocol_error_not_a_value_error(compress: bool) -> None:
    """It was a ValueError from msgpack ("cannot switch unpacking methods while an object is incomplete")."""
    import fluent_forward as ff

    raw = pack([et(), {"a": 1}]) + b"\x92\x01\x91\x81\x01"
    data = ff.encode_packed_forward("t", raw, compress=compress)
    with pytest.raises(ProtocolError) as err:
        ff.Decoder().feed(data)
    assert err.value.reason == "malformed_msgpack"


def test_an_array_as_a_map_key_is_a_tuple_and_the_model_keeps_the_record() -> None:
    """msgpack refused the whole message (a list is not hashable); now the one record is kept, its key a
    string (the audit model's fallback for keys JSON cannot hold)."""
    from kube_audit.model.audit import dumps

    payload = pack([et(), {"a": 1}]) + b"\x92\x01\x81\x91\x01\xa1v"  # [1, {[1]: "v"}]
    (_, first, _), (_, odd, _) = ours(payload)
    assert first == {"a": 1} and odd == {(1,): "v"}
    assert dumps(odd)[0] == b'{"(1,)":"v"}'


def _nonfinite_inside(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_nonfinite_inside(k) or _nonfinite_inside(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_nonfinite_inside(v) for v in value)
    return False


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([float("nan"), float("inf"), -float("inf")])
float_values = st.recursive(
    st.none() | st.integers(-(2**63), 2**64 - 1) | floats | st.text(max_size=6) | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999_999),
                          st.dictionaries(st.text(max_size=6), float_values, max_size=4)), min_size=1, max_size=30),
       st.booleans(), st.integers(1, 20))
def test_property_finite_is_never_claimed_for_a_nan_or_an_infinity(entries: list[Any], single: bool, batch: int) -> None:
    """``Numbers.finite`` may be False without cause (a 0xca or 0xcb byte that is not a float's), never True
    when a record holds a NaN or an infinite number, in 32 or 64 bits."""
    from fluent_forward.entries import Numbers

    try:
        payload = b"".join(msgpack.packb([et(s, ns), r], use_bin_type=True, use_single_float=single)
                           for s, ns, r in entries)
    except OverflowError:  # (a finite double beyond 32 bits)
        assume(False)
    numbers = Numbers()
    got = list(packed_entries(payload, None, LIMIT, 100_000, batch=batch, numbers=numbers))
    assert len(got) == len(entries)
    if any(_nonfinite_inside(record) for _, record, _ in got):
        assert not numbers.finite


def test_realistic_chunks_are_finite_and_the_model_agrees_with_or_without_the_flag() -> None:
    import fluent_forward as ff
    from bench.events import many
    from kube_audit.model.audit import parse

    records = list(many(3000))
    records[1234] = {**records[1234], "requestObject": {"spec": {"replicas": float("nan")}}}
    for compress in (False, True):
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(records))
        batches = [m for m in ff.Decoder(max_message_bytes=1 << 26).feed(
            ff.encode_packed_forward("audit", packed, compress=compress)) if isinstance(m, ff.EventBatch)]
        (batch,) = batches
        got = batch.records()
        assert not got.finite  # (the NaN)
        clean = [r for i, r in enumerate(records) if i != 1234]
        packed = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), r) for i, r in enumerate(clean))
        (batch,) = [m for m in ff.Decoder(max_message_bytes=1 << 26).feed(
            ff.encode_packed_forward("audit", packed, compress=compress)) if isinstance(m, ff.EventBatch)]
        ok = batch.records()
        assert ok.finite and len(ok) == len(clean)
        assert [parse(r, True) for r in ok] == [parse(r) for r in ok]
    assert parse(records[1234]).reason == "non_finite_number"  # type: ignore[union-attr]
    assert parse(records[1234], True).__class__.__name__ == "AuditEvent"  # (what the flag must never be wrongly given for)


def test_forward_mode_claims_finite_only_without_nan_and_message_mode_never() -> None:
    import fluent_forward as ff

    rec = {"auditID": "a", "stage": "ResponseComplete", "n": 1.5}
    (batch,) = ff.Decoder().feed(ff.encode_forward("audit", [(ff.EventTime(1, 0), rec)]))
    assert isinstance(batch, ff.EventBatch) and batch.records().finite  # built by msgspec, no NaN inside
    for bad in (float("nan"), float("inf"), -float("inf")):
        (batch,) = ff.Decoder().feed(ff.encode_forward("audit", [(ff.EventTime(1, 0), rec), (1, {"n": bad})]))
        assert isinstance(batch, ff.EventBatch) and not batch.records().finite
    (batch,) = ff.Decoder().feed(ff.encode_forward("audit", [(ff.EventTime(1, 0), {"t": msgpack.Timestamp(1)})]))
    assert isinstance(batch, ff.EventBatch) and not batch.records().finite  # (built by msgpack: never claimed)
    (batch,) = ff.Decoder().feed(ff.encode_message("audit", ff.EventTime(1, 0), rec))
    assert isinstance(batch, ff.EventBatch) and not batch.records().finite


def test_records_a_decoder_built_are_exact_and_records_made_by_hand_are_not() -> None:
    """``Records.exact`` (parse may let msgspec read their fields) only for what a decoder built from bytes,
    in every mode; a batch made by hand may hold tuples or subclasses."""
    import fluent_forward as ff

    rec, t = {"auditID": "a", "stage": "ResponseComplete", "user": {"groups": ["g"]}}, ff.EventTime(1, 0)
    for data in (ff.encode_forward("audit", [(t, rec)]), ff.encode_message("audit", t, rec),
                 ff.encode_packed_forward("audit", ff.encode_entry(t, rec)),
                 ff.encode_packed_forward("audit", ff.encode_entry(t, rec), compress=True)):
        (batch,) = ff.Decoder().feed(data)
        assert isinstance(batch, ff.EventBatch) and batch.records().exact, batch.mode
    by_hand = ff.EventBatch("audit", [(t, {**rec, "user": {"groups": ("g",)}})], ff.Options(), "forward", 0)
    assert not by_hand.records().exact


@pytest.mark.parametrize("items", [100_001, 10_000_000])
@pytest.mark.parametrize("kind", ["array", "map"])
def test_a_container_longer_than_the_limit_is_refused_at_its_header_not_built(items: int, kind: str) -> None:
    """msgspec has no length limit and the walk does not count: the run goes msgpack's way, which refuses
    the header (before, a 10 KB gzip message became a record of ten million items)."""
    import fluent_forward as ff

    head = (b"\xdd" if kind == "array" else b"\xdf") + items.to_bytes(4, "big")
    body = head + (b"\xc0" if kind == "array" else b"\x01\xc0") * items  # nils, or 1: nil pairs
    record = b"\x83\xa7auditID\xa1x\xa5stage\xa1s\xa1a" + body
    raw = pack([et(), {"before": 1}]) + b"\x92" + msgpack.packb(et()) + record
    with pytest.raises(ProtocolError) as err:
        reference(raw, limits=True)
    assert err.value.reason == "too_many_entries"
    for codec, payload in ((None, raw), ("gzip", gzip.compress(raw, 1))):
        got = []
        with pytest.raises(ProtocolError) as err:
            got.extend(packed_entries(payload, codec, LIMIT, 100_000))
        assert err.value.reason == "too_many_entries" and [r for _, r, _ in got] == [{"before": 1}]
    with pytest.raises(ProtocolError) as err:
        ff.Decoder().feed(ff.encode_packed_forward("audit", raw, compress=True))
    assert err.value.reason == "too_many_entries"


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.dictionaries(st.text(max_size=4), values, max_size=6)),
                        max_size=30),
       batch=st.integers(1, 20), limit=st.sampled_from([3, 8, 14, 15, 16, 20, 40]))
def test_property_same_limits_as_msgpack_at_any_max_entries(entries: list[Any], batch: int, limit: int) -> None:
    payload = pack(*[[et(t, 0), r] for t, r in entries])
    try:
        expected: Any = reference(payload, limit, limits=True)
    except ProtocolError as exc:
        expected = exc.reason
    try:
        got: Any = ours(payload, None, batch, limit)
    except ProtocolError as exc:
        got = exc.reason
    assert got == expected


def test_a_false_container_mark_only_sends_its_run_the_slower_way() -> None:
    from fluent_forward.entries import _may_hold_long_container

    # 0xdd then a length that cannot fit in what follows: not a header (an EventTime's bytes, say)
    assert not _may_hold_long_container(b"\xdc\x00\x01" + b"\x92\xd7\x00\x00\x00\x00\x07\xdd\xff\xff\xff\x81\xa1a\x01", 100_000)
    assert _may_hold_long_container(b"\xdc\x00\x01\xdd\x00\x01\x86\xa1" + b"\xc0" * 100_001, 100_000)
    assert not _may_hold_long_container(b"\xdc\x00\x01\xdd\x00\x01\x86\xa0" + b"\xc0" * 100_000, 100_000)  # (at the limit)
