"""A chunk's link, pure: what the forwarder's ``kube_audit`` option says of it, whether its MAC holds, how
it relates to the links already stored (in order, a resend, a break) and the tailer's seal over what it
stored (kube_audit/model/chain.py is the contract).

The store keeps one link per chunk (``audit_chain``), numbered by the store itself in commit order
(``id`` 1, 2, ...) and sealed in that order: each seal covers the link's fields, the row each event went
to (``rows``) and the digest of each stored body (``digests``, duplicates included) and the seal of the
link before it. So an edited row (its digest), an edited, deleted or inserted link (a seal, a missing
number) and an inserted row (a row no link covers) are all found without the forwarder's wire bytes.
Chunks without a chain (a stock Fluent Bit) get a link too (state ``unchained``, seq 0): their rows are
sealed from the store on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from kube_audit.model import chain
from kube_audit.model.source import SourceId

OK, BAD_MAC, UNCHAINED = "ok", "bad_mac", "unchained"
# receipt outcomes (tailer_chain_chunks_total{outcome})
IN_ORDER, RESEND, RESTART_RESEND, EARLY, BREAK = "in_order", "resend", "resend_after_restart", "out_of_order", "break"
# break kinds (a break's ``kind``; the sources view shows each as a gap with reason "chain_break")
MISSING, PREV_MISMATCH, RESTARTED = "missing", "prev_mismatch", "restarted"  # and BAD_MAC
REASON = "chain_break"
RESEND_WINDOW = 64  # a chain at most this long that starts again at seq 1 is taken as resent, not restarted
ROW_BYTES = 8


@dataclass(slots=True)
class Link:
    """One chunk's link as received; ``outcome``/``break_kind``/``epoch`` are filled in by the store
    when it writes the link (in the same transaction as the events)."""

    source: SourceId
    tag: str
    seq: int = 0  # 0: the chunk carried no chain
    prev: bytes = chain.GENESIS
    mac: bytes = chain.GENESIS
    state: str = UNCHAINED
    outcome: str = ""
    break_kind: str | None = None
    epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # breaks this late link filled: (first, last, kind) as found, and what is still missing of them
    resolved: list[tuple[int, int, str]] = field(default_factory=list)
    still_missing: list[tuple[int, int]] = field(default_factory=list)


def gap_id(epoch: int, first: int, last: int, kind: str) -> str:
    """The id a chain break has as a gap of its source (stable: the same break is one gap)."""
    return f"chain:{epoch}:{first}-{last}:{kind}"


def _bytes(value: Any) -> bytes | None:
    return bytes(value) if isinstance(value, (bytes, bytearray)) and len(value) == chain.MAC_BYTES else None


def receive(key: bytes, source: SourceId, tag: str, option: Any, payload: bytes | None) -> Link:
    """The link of a chunk: unchained without a complete chain in the option, else its MAC checked over
    ``payload`` (the entries field as sent)."""
    if not isinstance(option, dict) or payload is None:
        return Link(source, tag)
    seq, prev, mac = option.get("seq"), _bytes(option.get("prev")), _bytes(option.get("mac"))
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**63 or prev is None or mac is None:
        return Link(source, tag)
    good = chain.verify(key, source.cluster, source.name, tag, seq, prev, payload, mac)
    return Link(source, tag, seq, prev, mac, OK if good else BAD_MAC)


@dataclass(frozen=True, slots=True)
class Known:
    """What the store holds around a new link of the same source (any epoch)."""

    same_seq: tuple[tuple[int, bytes, bytes], ...]  # (epoch, prev, mac) of the links at this seq
    before: tuple[tuple[int, bytes], ...]  # (epoch, mac) of the links at seq - 1
    after: tuple[tuple[int, bytes], ...]  # (epoch, prev) of the links at seq + 1
    epoch: int  # the source's newest epoch (0: a new source)
    epoch_top: int  # the highest seq of that epoch


def classify(link: Link, known: Known) -> tuple[str, int, str | None]:
    """(outcome, epoch, break kind or None) of a chained link given what is stored. A link whose
    predecessor is not (yet) stored is ``out_of_order``: two connections around a reconnect deliver out
    of order, so only the gap scan, a grace period later, calls it a break (``missing``/``prev_mismatch``)."""
    for epoch, _, mac in known.same_seq:
        if mac == link.mac:
            return _flag(link, RESEND, epoch, None)
    if link.seq == 1:  # a new chain: a resend of the newest one's first chunk, or a restart
        if any(epoch == known.epoch and prev == link.prev for epoch, prev, _ in known.same_seq) \
                and known.epoch_top <= RESEND_WINDOW:
            return _flag(link, RESTART_RESEND, known.epoch, None)
        if known.epoch > 0:
            return _flag(link, BREAK, known.epoch + 1, RESTARTED)
        return _flag(link, IN_ORDER, 1, None)
    for epoch, prev, _ in known.same_seq:
        if prev == link.prev:
            return _flag(link, RESTART_RESEND, epoch, None)
    for epoch, mac in known.before:
        if mac == link.prev:
            return _flag(link, IN_ORDER, epoch, None)
    for epoch, prev in known.after:
        if prev == link.mac:
            return _flag(link, EARLY, epoch, None)  # its successor came first
    return _flag(link, EARLY, max(known.epoch, 1), None)


def _flag(link: Link, outcome: str, epoch: int, kind: str | None) -> tuple[str, int, str | None]:
    if link.state == BAD_MAC:
        return BREAK, epoch, BAD_MAC
    return outcome, epoch, kind


def pack_rows(rows: list[int]) -> bytes:
    return b"".join(r.to_bytes(ROW_BYTES, "big") for r in rows)


def unpack_rows(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + ROW_BYTES], "big") for i in range(0, len(data), ROW_BYTES)]


def split_digests(data: bytes) -> list[bytes]:
    n = chain.DIGEST_BYTES
    return [data[i:i + n] for i in range(0, len(data), n)]


@dataclass(frozen=True, slots=True)
class Stored:
    """A link as the store keeps it (one ``audit_chain`` row)."""

    id: int
    cluster: str
    source: str
    tag: str
    epoch: int
    seq: int
    prev: bytes
    mac: bytes
    state: str
    received: int  # milliseconds since the epoch
    lo: int  # the chunk's new rows have sequences in (lo, hi]
    hi: int
    rows: bytes
    digests: bytes
    seal: bytes


def seal(key: bytes, link: Stored, prev_seal: bytes) -> bytes:
    """The tailer's seal of a stored link (chain.store_mac over the forwarder's MAC and what was stored,
    with the link's fields and the seal of the link before it in front of the body digests)."""
    head = "\0".join(map(str, ("link", link.id, link.cluster, link.source, link.tag, link.epoch, link.seq,
                               link.state, link.received, link.lo, link.hi))).encode()
    fields = hashlib.sha256(head + b"\0" + link.prev + prev_seal + link.rows).digest()
    return chain.store_mac(key, link.mac, fields + link.digests)


@dataclass(frozen=True, slots=True)
class Anchor:
    """What the chain starts from: rows up to ``start_row`` are older than the chain; retention deleted
    the links up to ``link_id`` (the last one's seal ``link_seal``) and the rows up to ``pruned_row``."""

    start_row: int = 0
    link_id: int = 0
    link_seal: bytes = chain.GENESIS
    pruned_row: int = 0


def anchor_seal(key: bytes, a: Anchor) -> bytes:
    head = f"anchor\0{a.start_row}\0{a.link_id}\0{a.pruned_row}".encode()
    return chain.store_mac(key, a.link_seal, hashlib.sha256(head).digest())
