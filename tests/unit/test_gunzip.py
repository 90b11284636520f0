"""gzip payloads are inflated by ISA-L (fluent_forward/entries.py): what it accepts, what it refuses and
why must be what zlib would say, for whole, concatenated, cut and corrupted members."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluent_forward import ProtocolError, gunzip
from fluent_forward.entries import _PIECE, _gunzip_pieces

LIMIT = 64 * 1024 * 1024


def by_zlib(data: bytes, limit: int = LIMIT) -> bytes | str:
    """The reference: zlib's inflater over concatenated members, as the codec did before ISA-L."""
    out, left = b"", data
    try:
        while left:
            inflater = zlib.decompressobj(wbits=31)
            out += inflater.decompress(left)
            if not inflater.eof:
                return "bad_gzip"
            left = inflater.unused_data
    except zlib.error:
        return "bad_gzip"
    return "message_too_large" if len(out) > limit else out


def ours(data: bytes, limit: int = LIMIT) -> bytes | str:
    try:
        return gunzip(data, limit)
    except ProtocolError as exc:
        return exc.reason


BODY = os.urandom(5000) * 40 + b"audit " * 50_000  # > several pieces inflated, some of it incompressible
MEMBER = gzip.compress(BODY)
CASES = {
    "one member": MEMBER,
    "two members": MEMBER + gzip.compress(b"second"),
    "an empty member": gzip.compress(b""),
    "an empty member then one": gzip.compress(b"") + MEMBER,
    "cut in the trailer": MEMBER[:-3],
    "cut in the middle": MEMBER[:len(MEMBER) // 2],
    "cut in the header": MEMBER[:6],
    "the magic only": MEMBER[:2],
    "garbage after a member": MEMBER + b"garbage",
    "one zero byte after a member": MEMBER + b"\x00",
    "a wrong CRC": MEMBER[:-8] + bytes([MEMBER[-8] ^ 1]) + MEMBER[-7:],
    "a wrong length": MEMBER[:-4] + bytes([MEMBER[-4] ^ 1]) + MEMBER[-3:],
    "a corrupt block": MEMBER[:200] + bytes([MEMBER[200] ^ 0xFF]) + MEMBER[201:],
    "not gzip": b"\x00garbage",
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_bytes_or_same_reason_as_zlib(name: str) -> None:
    data = CASES[name]
    expected = by_zlib(data)
    assert ours(data) == expected
    if isinstance(expected, str):  # (the cases that must fail do)
        assert name not in ("one member", "two members", "an empty member", "an empty member then one")


def test_output_comes_a_piece_at_a_time_and_stops_at_the_limit() -> None:
    pieces = list(_gunzip_pieces(MEMBER, LIMIT))
    assert b"".join(pieces) == BODY
    assert len(pieces) > 3 and all(len(p) <= _PIECE for p in pieces)
    served = []
    with pytest.raises(ProtocolError) as err:
        for piece in _gunzip_pieces(MEMBER, 3 * _PIECE):
            served.append(piece)
    assert err.value.reason == "message_too_large"
    assert len(b"".join(served)) <= 3 * _PIECE  # (refused before more than the limit was handed out)


def test_a_bomb_is_refused_after_the_limit_not_inflated_whole() -> None:
    bomb = gzip.compress(b"\x00" * (200 * 1024 * 1024), 9)  # ~200 KB that inflate to 200 MiB
    with pytest.raises(ProtocolError) as err:
        for _ in _gunzip_pieces(bomb, 1024 * 1024):
            pass
    assert err.value.reason == "message_too_large"


def test_sync_flushed_members_as_streaming_senders_write_them() -> None:
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = deflater.compress(b"") + deflater.flush(zlib.Z_SYNC_FLUSH)
    for i in range(50):
        data += deflater.compress(b"entry %d " % i * 100) + deflater.flush(zlib.Z_SYNC_FLUSH)
    data += deflater.flush()
    assert ours(data) == by_zlib(data) == b"".join(b"entry %d " % i * 100 for i in range(50))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.integers(min_value=0, max_value=100_000),
       st.binary(max_size=8), st.integers(min_value=1, max_value=9))
def test_property_any_cut_or_tail_gives_zlibs_answer(members: list[bytes], cut: int, tail: bytes, level: int) -> None:
    data = b"".join(gzip.compress(m, level) for m in members)
    for variant in (data, data[:cut % (len(data) + 1)], data + tail):
        assert ours(variant) == by_zlib(variant), variant[-16:]
