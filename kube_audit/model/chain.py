"""Tamper evidence for chunks (issue 12). Pure: hashlib and hmac only.

A forwarder numbers its chunks per source (1, 2, ...) and chains them: each carries, in the
``kube_audit`` option (kube_audit/model/source.py), its ``seq``, the MAC of the chunk before it
(``prev``; ``GENESIS`` for the first chunk of a chain) and its own ``mac``::

    mac = HMAC-SHA256(key, "kube-audit-chain/v1" NUL cluster NUL source NUL tag NUL
                           seq as 8 bytes big-endian || prev || SHA-256(entries))

where ``entries`` is the PackedForward entries field exactly as it is on the wire (still gzip-compressed
for CompressedPackedForward: the tailer checks it before decoding, and a resend is the same bytes). A
chunk in Forward or Message mode carries no chain. The key is the forwarder's ``--integrity-key-file``,
else its shared key.

After a restart the forwarder goes on from the last acked chunk (seq and MAC in its checkpoint): chunks
sent but not acked before the crash come again with the same ``seq`` and ``prev`` but possibly other
contents (other boundaries), so a receiver takes a second chunk with a known (seq, prev) as a resend,
not a break. A forwarder that lost its checkpoint starts a new chain at seq 1 from GENESIS.

What the store keeps is checked by the tailer's own MAC over the digests of the stored bodies
(``store_mac``), anchored to the forwarder's MAC, so that an edited row is found without the tailer
keeping the wire bytes.
"""

from __future__ import annotations

import hashlib
import hmac

DOMAIN = b"kube-audit-chain/v1"
GENESIS = bytes(32)
MAC_BYTES = 32
DIGEST_BYTES = 16  # per stored body: a truncated SHA-256 is enough to tell an edit, and halves the index


def chunk_mac(key: bytes, cluster: str, source: str, tag: str, seq: int, prev: bytes, entries: bytes) -> bytes:
    """The MAC of one chunk; ``entries`` is the entries field as sent (see the module docstring)."""
    if len(prev) != MAC_BYTES:
        raise ValueError(f"prev must be {MAC_BYTES} bytes, got {len(prev)}")
    if not 0 < seq < 2**63:
        raise ValueError(f"seq must be in 1..2^63-1, got {seq}")
    head = b"\0".join((DOMAIN, cluster.encode(), source.encode(), tag.encode(), b""))
    return hmac.new(key, head + seq.to_bytes(8, "big") + prev + hashlib.sha256(entries).digest(),
                    hashlib.sha256).digest()


def verify(key: bytes, cluster: str, source: str, tag: str, seq: int, prev: bytes, entries: bytes,
           mac: bytes) -> bool:
    try:
        return hmac.compare_digest(chunk_mac(key, cluster, source, tag, seq, prev, entries), mac)
    except ValueError:
        return False


def body_digest(body: bytes) -> bytes:
    """The digest of one stored event body (the compact JSON the store keeps, before compression)."""
    return hashlib.sha256(body).digest()[:DIGEST_BYTES]


def store_mac(key: bytes, mac: bytes, digests: bytes) -> bytes:
    """The tailer's MAC over what it stored of a chunk: the chunk's own MAC and the concatenated
    ``body_digest`` of each of its events, in order."""
    return hmac.new(key, DOMAIN + b"\0store\0" + mac + digests, hashlib.sha256).digest()
