"""Seals chunks: the ``kube_audit`` option (source, cluster and, with a key, the chain) and the message.

The MAC is kube_audit.model.chain's, over the entries field as it goes on the wire. Seq and prev are
assigned when a chunk joins the ack window (the caller seals and submits under one lock, so the chain's
order is the window's and the acks'). A chunk is sealed once: a resend is the same bytes.

After an ack the chain's acked end (seq, MAC) goes to the checkpoint with the position; a restart goes on
from there (the next seq is the acked one + 1, prev its MAC), so chunks sent but not acked before a crash
come again under the same seq and prev, which the tailer takes as resends.
"""

from __future__ import annotations

from fluent_forward import Options, encode_packed
from kube_audit.model.chain import GENESIS, MAC_BYTES, chunk_mac
from kube_audit.model.source import OPTION, SourceId

from .batcher import Chunk


class Chain:
    def __init__(self, source: SourceId, key: bytes | None, acked_seq: int = 0, acked_mac: bytes = b"") -> None:
        self.source = source
        self.key = key  # None: no tamper evidence, the option names the source alone
        if acked_seq < 0 or (acked_seq and len(acked_mac) != MAC_BYTES):
            acked_seq, acked_mac = 0, b""  # a damaged chain end: a new chain, as without a checkpoint
        self.acked_seq = acked_seq
        self.acked_mac = acked_mac if acked_seq else GENESIS
        self.seq = acked_seq  # the last seq sealed
        self.prev = self.acked_mac  # the MAC of the last chunk sealed

    @property
    def on(self) -> bool:
        return self.key is not None

    def seal(self, chunk: Chunk) -> None:
        """Give ``chunk`` (not a marker, not yet sealed) its option and message."""
        option: dict[str, object] = {"source": self.source.name, "cluster": self.source.cluster}
        if self.key is not None:
            seq = self.seq + 1
            mac = chunk_mac(self.key, self.source.cluster, self.source.name, chunk.tag, seq, self.prev,
                            chunk.payload)
            option.update(seq=seq, prev=self.prev, mac=mac)
            chunk.seq, chunk.mac = seq, mac
            self.seq, self.prev = seq, mac
        chunk.message = encode_packed(chunk.tag, chunk.payload, Options(
            size=chunk.events, chunk=chunk.chunk_id, compressed="gzip" if chunk.compressed else None,
            extra={OPTION: option}))

    def acked(self, chunk: Chunk) -> None:
        """Acks come in order: the acked end of the chain moves to this chunk."""
        if chunk.seq:
            self.acked_seq, self.acked_mac = chunk.seq, chunk.mac
