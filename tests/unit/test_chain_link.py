"""The chain's pure bookkeeping (tailer/chain/link.py) and the tailer's --integrity-key-file."""

from __future__ import annotations

from pathlib import Path

from kube_audit.model import chain
from kube_audit.model.source import SourceId
from tailer import cli
from tailer.chain import link as L

KEY = b"k"
SRC = SourceId("prod", "apiserver-0")


def mac(n: int) -> bytes:
    return bytes([n]) * 32


def new(seq: int, prev: bytes, m: bytes, state: str = L.OK) -> L.Link:
    return L.Link(SRC, "audit", seq, prev, m, state)


def known(same=(), before=(), after=(), epoch=1, top=10) -> L.Known:
    return L.Known(tuple(same), tuple(before), tuple(after), epoch, top)


def test_receive_checks_the_mac_over_the_entries_as_sent() -> None:
    m = chain.chunk_mac(KEY, "prod", "apiserver-0", "audit", 3, mac(2), b"entries")
    option = {"source": "apiserver-0", "cluster": "prod", "seq": 3, "prev": mac(2), "mac": m}
    assert L.receive(KEY, SRC, "audit", option, b"entries").state == L.OK
    assert L.receive(KEY, SRC, "audit", option, b"entries!").state == L.BAD_MAC
    assert L.receive(b"other", SRC, "audit", option, b"entries").state == L.BAD_MAC
    for bad in (None, {"source": "a"}, {**option, "seq": 0}, {**option, "seq": True}, {**option, "prev": b"x"}):
        assert L.receive(KEY, SRC, "audit", bad, b"entries").state == L.UNCHAINED


def test_classify() -> None:
    assert L.classify(new(1, chain.GENESIS, mac(1)), known(epoch=0, top=0)) == (L.IN_ORDER, 1, None)
    assert L.classify(new(5, mac(4), mac(5)), known(before=[(1, mac(4))])) == (L.IN_ORDER, 1, None)
    assert L.classify(new(5, mac(4), mac(5)), known(same=[(1, mac(4), mac(5))])) == (L.RESEND, 1, None)
    assert L.classify(new(5, mac(4), mac(9)), known(same=[(1, mac(4), mac(5))])) == (L.RESTART_RESEND, 1, None)
    # a predecessor not stored yet, or another one at its seq: decided later by the gap scan
    assert L.classify(new(5, mac(4), mac(5)), known()) == (L.EARLY, 1, None)
    assert L.classify(new(5, mac(4), mac(5)), known(before=[(1, mac(7))])) == (L.EARLY, 1, None)
    assert L.classify(new(5, mac(4), mac(5)), known(after=[(2, mac(5))], epoch=3)) == (L.EARLY, 2, None)
    # seq 1 again: a resend of a short new chain, else a restart (a new epoch)
    again = new(1, chain.GENESIS, mac(8))
    assert L.classify(again, known(same=[(2, chain.GENESIS, mac(1))], epoch=2, top=3)) == (L.RESTART_RESEND, 2, None)
    assert L.classify(again, known(same=[(2, chain.GENESIS, mac(1))], epoch=2, top=500)) == (L.BREAK, 3, L.RESTARTED)
    bad = new(5, mac(4), mac(5), L.BAD_MAC)
    assert L.classify(bad, known(before=[(1, mac(4))])) == (L.BREAK, 1, L.BAD_MAC)


def test_seals_cover_every_field_and_the_link_before() -> None:
    s = L.Stored(1, "prod", "a", "audit", 1, 1, chain.GENESIS, mac(1), L.OK, 5, 0, 2, L.pack_rows([1, 2]),
                 bytes(32), b"")
    seal = L.seal(KEY, s, chain.GENESIS)
    assert L.seal(KEY, s, mac(9)) != seal
    for field, value in (("seq", 2), ("lo", 1), ("rows", L.pack_rows([1, 3])), ("digests", bytes(31) + b"x"),
                         ("source", "b"), ("state", L.BAD_MAC), ("received", 6)):
        from dataclasses import replace

        assert L.seal(KEY, replace(s, **{field: value}), chain.GENESIS) != seal, field
    assert L.unpack_rows(L.pack_rows([1, 2**40])) == [1, 2**40]


def test_the_integrity_key_file_wins_over_the_shared_key(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("integrity\n")
    assert cli.parse(["--shared-key", "shared", "--store", "none"]).integrity_key == b"shared"
    assert cli.parse(["--shared-key", "shared", "--integrity-key-file", str(key)]).integrity_key == b"integrity"
    assert cli.parse([]).integrity_key is None
